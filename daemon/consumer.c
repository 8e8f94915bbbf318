/*
 * consumer.c -- poll loop and rebalances.
 *
 * Records are gathered per partition; a partition's batch is applied when
 * it holds batch.max_orders records, when batch.max_ms has passed since its
 * first one, or when the consumer has nothing more queued (two Redis round
 * trips).  The rebalance callback claims partitions before assigning them
 * and applies what is pending before giving them up.
 *
 * Partitions are independent.  When a partition's batch cannot be applied
 * (Redis, the dead-letter topic), its records are kept, that partition
 * alone is paused, and it is retried with a capped exponential backoff
 * while the others go on and the loop keeps polling (so the group
 * membership and rebalances stay alive).  One function, part_on_result,
 * handles every outcome (retry, fenced, rewind) of order batches, profile
 * batches and idle reviews.
 *
 * Shutdown has a deadline (shutdown_timeout_ms): what is still retrying
 * then is abandoned uncommitted (it is read again at the next start), and
 * leaving the group, releasing leases and the last publish stop at it.
 */
#include "consumer.h"

#include "kafkaconf.h"
#include "log.h"
#include "month.h"
#include "profiles.h"
#include "review.h"
#include "state.h"
#include "store.h"
#include "txn.h"

#include <inttypes.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct pending {
    rd_kafka_message_t **m;
    size_t n, cap;
} pending_t;

typedef struct part {
    int assigned;
    pending_t prof;           /* customer-profiles records waiting */
    int64_t prof_catchup;     /* profiles offset to reach before orders apply; -1 none */
    int64_t catchup_deadline; /* monotonic ms: give up waiting (and say so) after it */
    int64_t last_record_ms;   /* monotonic: last order record seen */
    int fenced;               /* a commit was refused: paused until the group moves it */
    int paused, prof_paused;  /* its orders / customer-profiles partition paused by us */
    int need_rewind;          /* Redis lost writes: claim again and seek, when Redis answers */
    /* A batch sent ahead (apply_flight_t) that did not land: APPLY_FENCED
     * or APPLY_REWIND, acted on at the partition's next turn; 0: none. */
    int settle_rc;
    char settle_err[400];
    int64_t lease_at; /* monotonic ms of the last lease renewal (store_lease) */
    int64_t fenced_at;
    int64_t due_ms; /* monotonic: its pending records are applied by then */
    /* Its outbox's entries left behind by a publish round (a topic that
     * refuses them, a malformed entry): its next round not before
     * pub_retry_at, backing off 200 ms to 5 s; the other partitions' go on. */
    int64_t pub_retry_at, pub_backoff;
    int64_t retry_at; /* monotonic: waiting on a retry until then; 0 = not waiting */
    int64_t backoff;
    /* The offset after the last record polled since the assignment or a
     * seek, orders and profiles; -1: none yet (see prefetch_wake). */
    int64_t next_off, pnext_off;
    /* [0] orders, [1] profiles: every offset below it was handed over and
     * taken into a batch (or checked), or holds nothing that will ever
     * come (a reading started there, apply_skip moved past it); -1: not
     * known since the reading started.  What marker_tick compares with
     * the offset Redis holds.  A record tierd drops must leave it behind
     * (or come with a flag marker_tick checks): else a skip passes it. */
    int64_t taken[2];
    /* [0] orders, [1] profiles: the offset tierd holds for it, found past
     * the topic's end (out_of_range); its reading waits.  -1: none. */
    int64_t past_end[2];
    /* [0] orders, [1] profiles: it waits because the record before that
     * offset is not the one applied there (topic_check), not because the
     * offset lies past the end (/readyz says which). */
    int differs[2];
    int64_t past_end_said; /* monotonic ms of the last line about it */
    /* [0] orders, [1] profiles: read again from refetch_off at this
     * monotonic ms, after an out-of-range error the broker's ends did not
     * explain (out_of_range); 0: nothing due. */
    int64_t refetch_at[2], refetch_off[2];
    /* [0] orders, [1] profiles: where Redis' offset is to move, past
     * records that will never come: deleted by the broker unread (the
     * log's new start, out_of_range), or transaction markers and aborted
     * records (librdkafka's position, marker_tick).  Moved once the
     * records handed over before it are applied (apply_skip).  -1: none. */
    int64_t skip_to[2];
    /* [0] orders, [1] profiles: skip_to passes only markers and aborted
     * records, so the hash of the last record applied stays valid
     * (apply_skip's keep_check); 0 when records were deleted. */
    int skip_keep[2];
    /* The offset the orders' reading last started at (an assignment, a
     * rewind, a reading again): where refetch's eager re-assignment puts
     * a partition that has handed over nothing since. */
    int64_t read_from;
    /* [0] orders, [1] profiles: the record before the offset Redis
     * holds, read first when the partition is taken, must be the one
     * applied there (meta's prev_fp, prev_pfp; topic_check); -1: nothing
     * to check. */
    int64_t verify_at[2];
    uint64_t verify_fp[2];
    apply_part_t ap;
    rd_kafka_message_t **pending;
    size_t npending, cap;
} part_t;

/* Outbox entries one publishing round reads per partition (an entry holds
 * at most 256 events), so a round's memory stays bounded: at most 1024
 * events a partition. */
#define OUTBOX_ROUND_ENTRIES 4

/* The publisher's pace while a batch is in the air (publish_all): under
 * a backlog, decided events wait at most this long for their round.  500
 * drained the benchmark's backlog 4 % faster than 200 (interleaved runs,
 * docs/benchmark.md); light traffic is not paced at all. */
#define PUBLISH_PACE_MS 500

/* How often marker_tick looks for partitions whose position passed
 * transaction markers. */
#define MARKER_TICK_MS 1000

/* Records taken from the consumer queue per call. */
#define POLL_BATCH 1024

/* A consumer handle's errors in place of records (a fetch the broker
 * refused, a topic gone): the first is logged at once, the next ones once
 * in READ_ERROR_LOG_MS with their count, and the first record after them
 * says the topic reads again.  /metrics counts every one. */
#define READ_ERROR_LOG_MS 30000
typedef struct read_errors {
    uint64_t total;    /* since start */
    uint64_t unlogged; /* since the last line */
    int64_t logged_at; /* monotonic ms of the last line; 0: the topic reads */
} read_errors_t;

/* What the loop knows of one handle's fetcher (see prefetch_bound). */
typedef struct prefetch {
    rd_kafka_queue_t *q; /* the handle's consumer queue; owned reference; NULL: none */
    size_t min_msgs;     /* queued.min.messages in force */
    size_t max_bytes;    /* queued.max.messages.kbytes in force, in bytes as librdkafka counts */
    size_t last_got;     /* records taken in the previous turn */
    size_t last_bytes;   /* and their payload bytes */
    int stalled;         /* the queue may have reached a bound since the last wake-up */
} prefetch_t;

struct consumer {
    const config_t *conf;
    apply_ctx_t *apply; /* borrowed */
    publish_t *pub;     /* borrowed */
    rd_kafka_t *rk;
    rd_kafka_t *prk;           /* customer-profiles, assigned by hand */
    prefetch_t pf, ppf;        /* the fetchers of rk and prk */
    read_errors_t rerr, prerr; /* rk's and prk's errors in place of records */
    /* Offsets the broker deleted before they were read: [0] orders, [1]
     * profiles (out_of_range). */
    uint64_t deleted_unread[2];
    /* The topics' handles, held from the start so each handle knows its
     * partitions' leaders before any is assigned.  Without them
     * librdkafka 2.0.2 learns the topic only at the assignment, finds no
     * leader for most partitions yet, and retries their start offset's
     * lookup 500 ms later: every assignment began half a second late, a
     * partition's first fetch up to 1.4 s after it. */
    rd_kafka_topic_t *rkt, *prkt;
    int64_t last_idle_check_ms;
    int64_t marker_tick_ms; /* monotonic ms of the last marker_tick */
    part_t *parts;          /* indexed by partition id */
    int32_t nparts;
    size_t npending;
    apply_msg_t *msgs; /* one flush's records for apply (msgs_for): kept, not allocated per flush */
    size_t capmsgs;
    int fatal;
    int stopping;     /* the loop has ended: no new work, only the way out */
    int64_t deadline; /* monotonic: the way out ends here */
    volatile sig_atomic_t *stop;
    int64_t last_report_ms;
    uint64_t last_applied;
    metrics_t *metrics;      /* borrowed; NULL: none */
    metrics_snapshot_t snap; /* the next one published: large, so kept here */
    /* Dead-letter reasons by index, named once at start: the HTTP thread
     * reads them through the published snapshot until metrics_stop. */
    const char *reason_names[ORDER_ERR__COUNT + 1];
    int64_t last_metrics_ms;
    uint64_t metrics_applied; /* applied at last_metrics_ms */
    uint64_t outbox_depth;    /* at the last look */
    int64_t publish_retry_at; /* monotonic: after a failed publish, not before */
    int64_t publish_paced_at; /* monotonic: with a batch in the air, not before (publish_all) */
    int publish_full;         /* the last round read as much as a round may: more waits */
    int64_t publish_backoff;
    int32_t publish_next; /* the next round starts here: no partition starves */
    double lat_sum;       /* order latency: Kafka timestamp to commit */
    uint64_t lat_count;
    double lat_buckets[METRICS_LAT_BUCKETS];
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A retry's backoff: 200 ms, doubling to 5 s.  Returns when to retry. */
static int64_t back_off(int64_t *backoff) {
    *backoff = *backoff ? *backoff * 2 : 200;
    if (*backoff > 5000) *backoff = 5000;
    return mono_ms() + *backoff;
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static part_t *part_get(consumer_t *k, int32_t p) {
    if (p < 0) return NULL;
    if (p >= k->nparts) {
        int32_t n = p + 1;
        part_t *np = realloc(k->parts, (size_t)n * sizeof(*np));
        if (!np) return NULL;
        memset(np + k->nparts, 0, (size_t)(n - k->nparts) * sizeof(*np));
        for (int32_t i = k->nparts; i < n; i++) {
            for (int input = 0; input < 2; input++)
                np[i].past_end[input] = np[i].verify_at[input] = np[i].skip_to[input] = -1;
            np[i].next_off = np[i].pnext_off = np[i].taken[0] = np[i].taken[1] = -1;
        }
        k->parts = np;
        k->nparts = n;
    }
    return &k->parts[p];
}

static void part_drop_pending(consumer_t *k, part_t *pt) {
    for (size_t i = 0; i < pt->npending; i++) rd_kafka_message_destroy(pt->pending[i]);
    k->npending -= pt->npending;
    pt->npending = 0;
    for (size_t i = 0; i < pt->prof.n; i++) rd_kafka_message_destroy(pt->prof.m[i]);
    pt->prof.n = 0;
}

static int pending_push(pending_t *p, rd_kafka_message_t *m) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        rd_kafka_message_t **nm = realloc(p->m, cap * sizeof(*nm));
        if (!nm) return -1;
        p->m = nm;
        p->cap = cap;
    }
    p->m[p->n++] = m;
    return 0;
}

/* One partition of customer-profiles, as a list for the profiles handle. */
static rd_kafka_topic_partition_list_t *plist(consumer_t *k, int32_t id, int64_t offset) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, k->conf->topic_profiles, id)->offset = offset;
    return l;
}

/* Pauses or resumes one partition's orders and profiles.  Orders stay
 * paused while fenced or while its profiles catch up.  Only a change is
 * passed on: each pause or resume bumps the partition's op version in
 * librdkafka 2.0.2, which drops what was fetched or asked for before it
 * (an offset lookup is retried 500 ms later, a fetch response thrown
 * away). */
static void set_paused(rd_kafka_t *rk, const char *topic, int32_t id, int want, int *paused) {
    if (want == *paused) return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, id);
    if (want)
        rd_kafka_pause_partitions(rk, l);
    else
        rd_kafka_resume_partitions(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    *paused = want;
}

static void part_pause(consumer_t *k, int32_t id, part_t *pt, int pause) {
    set_paused(k->rk, k->conf->topic_orders, id,
               pause || pt->fenced || pt->prof_catchup >= 0 || pt->past_end[0] >= 0, &pt->paused);
    set_paused(k->prk, k->conf->topic_profiles, id, pause || pt->fenced || pt->past_end[1] >= 0,
               &pt->prof_paused);
}

/* k->msgs holding n cleared records from m; NULL when out of memory.  One
 * flush at a time uses it. */
static apply_msg_t *msgs_for(consumer_t *k, rd_kafka_message_t **m, size_t n) {
    if (n > k->capmsgs) {
        apply_msg_t *v = realloc(k->msgs, n * sizeof(*v));
        if (!v) return NULL;
        k->msgs = v;
        k->capmsgs = n;
    }
    apply_msg_t *msgs = k->msgs;
    for (size_t i = 0; i < n; i++) { /* not the reasons' bytes: a batch's worth of them */
        msgs[i].offset = m[i]->offset;
        msgs[i].key = m[i]->key;
        msgs[i].key_len = m[i]->key_len;
        msgs[i].value = m[i]->payload;
        msgs[i].value_len = m[i]->len;
        msgs[i].state = MSG_NEW;
        msgs[i].verdict = ORDER_OK;
        msgs[i].reason[0] = '\0';
    }
    return msgs;
}

/* Applies one partition's pending profile records.  Returns APPLY_*. */
static int part_flush_profiles(consumer_t *k, int32_t id, part_t *pt, char *err, size_t errn) {
    if (pt->prof.n == 0 || pt->fenced) return APPLY_OK;
    apply_msg_t *msgs = msgs_for(k, pt->prof.m, pt->prof.n);
    if (!msgs) {
        snprintf(err, errn, "out of memory");
        return APPLY_RETRY;
    }
    int rc = profiles_apply(k->apply, &pt->ap, msgs, pt->prof.n, err, errn);
    if (rc == APPLY_OK) {
        for (size_t i = 0; i < pt->prof.n; i++) {
            if (msgs[i].state == MSG_DEAD)
                log_warn("profiles", "%s [%d] offset %" PRId64 " dead-lettered: %s: %s",
                         k->conf->topic_profiles, (int)id, msgs[i].offset,
                         order_reason_code(msgs[i].verdict), msgs[i].reason);
            rd_kafka_message_destroy(pt->prof.m[i]);
        }
        pt->prof.n = 0;
        publish_dead_forget(k->pub, k->conf->topic_profiles, id, pt->ap.meta.poffset);
    }
    return rc;
}

static int claim(consumer_t *k, int32_t id, part_t *pt, int patient);

/* Moves one handle's reading of (topic, id) to off.  0, or -1 with the
 * reason logged: the call's error and the partition's own both count
 * (librdkafka reports a partition's failure only in its element). */
static int seek_to(consumer_t *k, rd_kafka_t *rk, const char *topic, int32_t id, int64_t off) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, id)->offset = off;
    rd_kafka_error_t *e = NULL;
    const char *why = NULL;
    if (fault_holding(&k->apply->fault, FAULT_SEEK)) /* test builds only */
        why = "fault injection: seek refused";
    else if ((e = rd_kafka_seek_partitions(rk, l, 5000)))
        why = rd_kafka_error_string(e);
    else if (l->elems[0].err)
        why = rd_kafka_err2str(l->elems[0].err);
    if (why) log_error("consumer", "seek %s [%d] to %" PRId64 ": %s", topic, (int)id, off, why);
    if (e) rd_kafka_error_destroy(e);
    rd_kafka_topic_partition_list_destroy(l);
    return why ? -1 : 0;
}

/* Claims the partition again and moves consumption to the offset Redis
 * holds (after Redis lost writes, or after we were fenced by a stray
 * writer while the group still says we own it).  One attempt: while Redis
 * does not answer, or the seek fails, the partition waits and tries
 * again. */
static int rewind_part(consumer_t *k, int32_t id, part_t *pt) {
    pt->need_rewind = 1;
    if (claim(k, id, pt, 0) != 0) return -1;
    pt->next_off = pt->pnext_off = -1;
    /* What was to be skipped was measured against the offset Redis
     * held before; out_of_range and marker_tick measure it again.  The
     * reading starts again at the offsets Redis holds, unchecked. */
    pt->skip_to[0] = pt->skip_to[1] = -1;
    pt->verify_at[0] = pt->verify_at[1] = -1;
    pt->taken[0] = pt->ap.meta.offset;
    pt->taken[1] = pt->ap.meta.poffset;
    pt->read_from = pt->ap.meta.offset >= 0 ? pt->ap.meta.offset : RD_KAFKA_OFFSET_BEGINNING;
    /* A reading stopped past the topic's end takes no seek (out_of_range).
     * A seek that fails leaves the reading where it was, past what Redis
     * lost: the rewind stays owed (need_rewind), and what is polled
     * meanwhile is dropped (enqueue), never applied from there. */
    if ((pt->past_end[0] < 0 && seek_to(k, k->rk, k->conf->topic_orders, id, pt->read_from)) ||
        (pt->past_end[1] < 0 &&
         seek_to(k, k->prk, k->conf->topic_profiles, id,
                 pt->ap.meta.poffset >= 0 ? pt->ap.meta.poffset : RD_KAFKA_OFFSET_BEGINNING))) {
        part_drop_pending(k, pt);
        return -1;
    }
    pt->need_rewind = 0;
    pt->fenced = 0;
    /* Whatever was decided before the rewind, or by the writer that
     * fenced us, waits in the outbox. */
    pt->ap.outbox_dirty = 1;
    part_pause(k, id, pt, 0);
    log_info("consumer", "re-claimed %s [%d] at offset %" PRId64 " (epoch %" PRId64 ")",
             k->conf->topic_orders, (int)id, pt->ap.meta.offset, pt->ap.meta.epoch);
    return 0;
}

/* Each committed record's age: its Kafka timestamp to now. */
static void observe_latency(consumer_t *k, rd_kafka_message_t **m, size_t n) {
    int64_t now = now_ms();
    for (size_t i = 0; i < n; i++) {
        int64_t ts = rd_kafka_message_timestamp(m[i], NULL);
        if (ts < 0) continue;
        double secs = now > ts ? (double)(now - ts) / 1000.0 : 0.0;
        metrics_hist_observe(metrics_latency_bounds, METRICS_LAT_BUCKETS, k->lat_buckets,
                             &k->lat_sum, &k->lat_count, secs);
    }
}

/* Partition id's records below offset are committed. */
static void landed(consumer_t *k, int32_t id, int64_t offset) {
    /* Advisory: lets operators watch lag with the usual Kafka tools. */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, k->conf->topic_orders, id)->offset = offset;
    rd_kafka_offsets_store(k->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    publish_dead_forget(k->pub, k->conf->topic_orders, id, offset);
}

/* The outcome of a batch sent ahead (apply_settled_fn): runs inside
 * whatever store call read it, so it only takes note. */
static void on_settled(void *opaque, int32_t id, int64_t offset, int rc, const char *err) {
    consumer_t *k = opaque;
    if (id < 0 || id >= k->nparts || !k->parts[id].assigned) return;
    part_t *pt = &k->parts[id];
    if (rc == APPLY_OK) {
        landed(k, id, offset);
        return;
    }
    pt->settle_rc = rc;
    snprintf(pt->settle_err, sizeof(pt->settle_err),
             "%s [%d]: the batch before offset %" PRId64 ": %s", k->conf->topic_orders, (int)id,
             offset, err);
}

/* Applies one partition's pending records.  Returns APPLY_*. */
static int part_flush(consumer_t *k, int32_t id, part_t *pt, char *err, size_t errn) {
    if (pt->npending == 0) return APPLY_OK;
    if (pt->prof_catchup >= 0) return APPLY_OK; /* profiles first; see catchup_check */
    if (pt->fenced) {
        part_drop_pending(k, pt);
        return APPLY_OK;
    }
    apply_msg_t *msgs = msgs_for(k, pt->pending, pt->npending);
    if (!msgs) {
        snprintf(err, errn, "out of memory");
        return APPLY_RETRY;
    }
    int rc = apply_batch(k->apply, &pt->ap, msgs, pt->npending, now_ms(), err, errn);
    if (rc == APPLY_OK) {
        /* A batch whose EXEC is still in the air is confirmed in
         * on_settled; its records go now: if it does not land, the
         * partition consumes again from the offset Redis holds. */
        if (!apply_in_flight(k->apply, id)) landed(k, id, pt->ap.meta.offset);
        observe_latency(k, pt->pending, pt->npending);
        for (size_t i = 0; i < pt->npending; i++)
            if (msgs[i].state == MSG_DEAD)
                log_warn("apply", "%s [%d] offset %" PRId64 " dead-lettered: %s: %s",
                         k->conf->topic_orders, (int)id, msgs[i].offset,
                         order_reason_code(msgs[i].verdict), msgs[i].reason);
        for (size_t i = 0; i < pt->npending; i++) rd_kafka_message_destroy(pt->pending[i]);
        k->npending -= pt->npending;
        pt->npending = 0;
    }
    return rc;
}

/* The one place that acts on an outcome of a partition's work (order
 * batch, profile batch, idle review).  Returns rc. */
static int part_on_result(consumer_t *k, int32_t id, part_t *pt, int rc, const char *err) {
    switch (rc) {
    case APPLY_OK:
        if (pt->retry_at) {
            log_info("consumer", "%s [%d]: applying again after a retry; resuming",
                     k->conf->topic_orders, (int)id);
            pt->retry_at = 0;
            pt->backoff = 0;
            part_pause(k, id, pt, 0);
        }
        break;
    case APPLY_RETRY:
        if (!pt->retry_at)
            log_error("consumer", "%s [%d]: %s; pausing this partition and retrying",
                      k->conf->topic_orders, (int)id, err);
        else
            log_debug("consumer", "%s [%d]: still failing: %s", k->conf->topic_orders, (int)id,
                      err);
        pt->retry_at = back_off(&pt->backoff);
        part_pause(k, id, pt, 1);
        break;
    case APPLY_FENCED:
        pt->settle_rc = 0; /* this covers a batch in the air too */
        log_warn("consumer", "%s; dropping %zu records and pausing the partition", err,
                 pt->npending + pt->prof.n);
        part_drop_pending(k, pt);
        pt->fenced = 1;
        pt->fenced_at = mono_ms();
        pt->retry_at = 0;
        pt->backoff = 0;
        part_pause(k, id, pt, 1);
        break;
    case APPLY_CORRUPT:
        /* Never read past, never reset: the partition waits for an
         * operator (tierctl rebuild), and says so every minute. */
        log_error("consumer", "%s [%d]: %s; the partition waits until that is repaired",
                  k->conf->topic_orders, (int)id, err);
        pt->backoff = 60000;
        pt->retry_at = mono_ms() + pt->backoff;
        part_pause(k, id, pt, 1);
        break;
    case APPLY_REWIND:
        pt->settle_rc = 0;
        log_warn("consumer", "%s; consuming again from the stored offset", err);
        part_drop_pending(k, pt);
        if (rewind_part(k, id, pt) != 0) {
            char why[600];
            snprintf(why, sizeof(why), "%s; the claim will be tried again", err);
            return part_on_result(k, id, pt, APPLY_RETRY, why);
        }
        if (pt->retry_at) part_on_result(k, id, pt, APPLY_OK, "");
        break;
    default: break;
    }
    return rc;
}

/* One partition's turn: a rewind still owed, then profiles, then orders. */
static int part_service(consumer_t *k, int32_t id, part_t *pt) {
    char err[512] = "";
    int rc;
    if (pt->settle_rc) {
        char why[sizeof(pt->settle_err)];
        snprintf(why, sizeof(why), "%s", pt->settle_err);
        return part_on_result(k, id, pt, pt->settle_rc, why);
    }
    if (pt->need_rewind) {
        if (rewind_part(k, id, pt) != 0)
            return part_on_result(k, id, pt, APPLY_RETRY, "claim after Redis lost writes failed");
    }
    if (pt->fenced) {
        part_drop_pending(k, pt);
        return APPLY_OK;
    }
    rc = part_on_result(k, id, pt, part_flush_profiles(k, id, pt, err, sizeof(err)), err);
    if (rc != APPLY_OK) return rc;
    err[0] = '\0';
    rc = part_on_result(k, id, pt, part_flush(k, id, pt, err, sizeof(err)), err);
    for (int input = 0; rc == APPLY_OK && input < 2; input++) {
        /* The records handed over before them first. */
        int64_t to = pt->skip_to[input];
        if (to < 0 || (input ? pt->prof.n : pt->npending) > 0) continue;
        rc = apply_skip(k->apply, &pt->ap, input, to, pt->skip_keep[input], err, sizeof(err));
        if (part_on_result(k, id, pt, rc, err) != APPLY_OK) continue;
        pt->skip_to[input] = -1;
        if (pt->taken[input] < to) pt->taken[input] = to;
        /* Kafka's committed offset too; a batch in the air does that once
         * it lands (on_settled). */
        if (!input && !apply_in_flight(k->apply, id)) landed(k, id, pt->ap.meta.offset);
    }
    return rc;
}

/* Services every partition whose batch is due (all of them when `all`):
 * a partition waiting on a retry only once its backoff has passed, so it
 * never holds the others up. */
static void service_due(consumer_t *k, int all) {
    /* batch.max_orders bounds the records held over all partitions, not
     * per partition: memory stays the same however many partitions are
     * assigned, and a backlog's batches are max_orders / partitions. */
    size_t held = 0;
    for (int32_t i = 0; i < k->nparts; i++)
        if (k->parts[i].assigned && !k->parts[i].retry_at) held += k->parts[i].npending;
    if (held >= (size_t)k->conf->batch_max_orders) all = 1;
    for (int32_t i = 0; i < k->nparts; i++) {
        part_t *pt = &k->parts[i];
        int64_t t = mono_ms();
        if (!pt->assigned) continue;
        if (pt->npending == 0 && pt->prof.n == 0 && !pt->need_rewind && !pt->retry_at &&
            !pt->settle_rc && pt->skip_to[0] < 0 && pt->skip_to[1] < 0)
            continue;
        if (k->stopping && t >= k->deadline) return;
        /* A stop asked for during this pass: the rest is shut_down's, within
         * its deadline.  Each partition's work may wait (a dead letter's
         * acknowledgement, a Redis timeout), so finishing the pass could
         * carry tierd seconds past shutdown_timeout_ms. */
        if (!k->stopping && k->stop && *k->stop) return;
        /* A batch in the air that did not land is acted on at once. */
        if (!pt->settle_rc && pt->retry_at && t < pt->retry_at) continue;
        if (!pt->settle_rc && !pt->retry_at && !all && t < pt->due_ms &&
            pt->npending < (size_t)k->conf->batch_max_orders)
            continue;
        part_service(k, i, pt);
    }
}

/* How long the poll may wait.  While a partition holds records it does
 * not wait at all: a poll that finds nothing queued means the batch is as
 * big as it gets now, and it is applied at once (light traffic commits
 * at once; a backlog still forms big batches, up to batch.max_orders or
 * batch.max_ms).  Otherwise until the first retry comes, at most 100 ms. */
static int poll_timeout(consumer_t *k) {
    int64_t t = mono_ms(), next = t + 100;
    for (int32_t i = 0; i < k->nparts; i++) {
        part_t *pt = &k->parts[i];
        if (!pt->assigned) continue;
        if (pt->retry_at) {
            if (pt->retry_at < next) next = pt->retry_at;
        } else if (pt->npending || pt->prof.n) {
            return 0;
        }
    }
    return next > t ? (int)(next - t) : 0;
}

/* Resumes the orders of partitions whose profiles have caught up. */
static void catchup_check(consumer_t *k) {
    for (int32_t i = 0; i < k->nparts; i++) {
        part_t *pt = &k->parts[i];
        if (!pt->assigned || pt->prof_catchup < 0) continue;
        int late = mono_ms() > pt->catchup_deadline;
        if (pt->ap.meta.poffset < pt->prof_catchup && !late) continue;
        if (late)
            log_warn("consumer",
                     "%s [%d]: profiles still at %" PRId64 " of %" PRId64
                     " after 60 s; applying orders anyway",
                     k->conf->topic_orders, (int)i, pt->ap.meta.poffset, pt->prof_catchup);
        pt->prof_catchup = -1;
        if (!pt->retry_at) part_pause(k, i, pt, 0);
    }
}

/* A round that ended: its partitions whose outbox may still hold entries
 * (more than a round reads, one not read, an event Kafka refused) are
 * marked for the next round; one whose entries were left behind backs
 * off alone (pub_retry_at), one that published all it read starts over.
 * Returns how many partitions back off, and the longest wait in *wait. */
static size_t round_done(consumer_t *k, const int32_t *done, const int *nread, const int *nleft,
                         size_t ndone, int failed, int64_t *wait) {
    size_t backing = 0;
    *wait = 0;
    if (ndone) k->publish_full = 0;
    for (size_t j = 0; j < ndone; j++) {
        if (done[j] >= k->nparts) continue;
        part_t *pt = &k->parts[done[j]];
        if (failed || nread[j] < 0 || nread[j] >= OUTBOX_ROUND_ENTRIES) pt->ap.outbox_dirty = 1;
        if (nread[j] >= OUTBOX_ROUND_ENTRIES) k->publish_full = 1;
        if (nleft[j] > 0) {
            pt->pub_retry_at = back_off(&pt->pub_backoff);
            if (pt->pub_backoff > *wait) *wait = pt->pub_backoff;
            backing++;
        } else if (nleft[j] == 0) {
            pt->pub_backoff = pt->pub_retry_at = 0;
        }
    }
    return backing;
}

/* Drives the outbox publisher: a round covers up to 64 partitions with
 * decided events, and the loop waits at most wait_ms for its delivery
 * reports (a broker that does not answer never holds the loop; the round
 * goes on at the next turn). */
static void publish_all(consumer_t *k, int wait_ms) {
    int32_t ids[64], done[64];
    int nread[64], nleft[64];
    size_t n = 0, ndone = 0;
    char err[512] = "";
    if (fault_holding(&k->apply->fault, FAULT_PUBLISH)) return; /* test builds only */
    publish_poll(k->pub);
    /* With a batch in the air the publisher's reads and deletes would
     * wait for it (store_settle) instead of the loop decoding the next
     * batch meanwhile: they go at most every PUBLISH_PACE_MS then, unless
     * the last round was full (a review's events, say: a round carries up
     * to OUTBOX_ROUND_ENTRIES transactions' events of each partition, and
     * more wait).  Under a backlog a batch is in the air every turn;
     * otherwise the loop publishes before it waits for records, once the
     * batch is confirmed (consumer_run). */
    if (k->apply->flight.active && !k->publish_full) {
        int64_t t = mono_ms();
        if (t < k->publish_paced_at) return;
        k->publish_paced_at = t + PUBLISH_PACE_MS;
    }
    if (!publish_outboxes_busy(k->pub)) {
        int64_t t = mono_ms();
        if (t < k->publish_retry_at) return;
        for (int32_t i = 0; i < k->nparts && n < 64; i++) {
            int32_t id = (k->publish_next + i) % k->nparts;
            const part_t *pt = &k->parts[id];
            if (pt->assigned && pt->ap.outbox_dirty && t >= pt->pub_retry_at) ids[n++] = id;
        }
        if (n == 0) return;
        k->publish_next = (ids[n - 1] + 1) % k->nparts;
        /* Cleared as the round reads them: a commit while the round is in
         * flight marks its partition again, and is not lost. */
        for (size_t j = 0; j < n; j++) k->parts[ids[j]].ap.outbox_dirty = 0;
    }
    int rc = publish_outboxes(k->pub, k->apply->store, k->conf->topic_orders, ids, n,
                              OUTBOX_ROUND_ENTRIES, wait_ms, done, nread, nleft, &ndone, err,
                              sizeof(err));
    if (rc != 0) /* nothing was read: the partitions wait for the next round */
        for (size_t j = 0; j < n; j++) k->parts[ids[j]].ap.outbox_dirty = 1;
    int64_t wait = 0;
    size_t backing = round_done(k, done, nread, nleft, ndone, err[0] != 0, &wait);
    /* A failure that comes back at once (a malformed entry, no
     * authorization) must not turn every loop turn into a read and a
     * republish: back off, 200 ms to 5 s.  Entries left behind hold back
     * their own partition only (its later entries wait behind them, in
     * order); Redis failing, or an error of no partition's, holds back all. */
    if (rc == 0 && backing) {
        k->publish_backoff = 0;
        log_warn("publish",
                 "%s outboxes: %s; will retry in up to %" PRId64
                 " ms (%zu partition(s) wait; the others go on)",
                 k->conf->topic_orders, err, wait, backing);
        return;
    }
    if (rc != 0 || err[0]) {
        k->publish_retry_at = back_off(&k->publish_backoff);
        log_warn("publish", "%s outboxes: %s; will retry in %" PRId64 " ms", k->conf->topic_orders,
                 err, k->publish_backoff);
        return;
    }
    if (ndone) k->publish_backoff = 0;
}

/* Renews the lease of every partition we own (see store_lease), so
 * tierctl can tell a live owner from a dead one.  A renewal refused
 * because the epoch moved leaves the partition to the fencing path. */
static void renew_leases(consumer_t *k) {
    int64_t t = mono_ms();
    for (int32_t i = 0; i < k->nparts; i++) {
        part_t *pt = &k->parts[i];
        char err[512] = "";
        store_meta_t now;
        if (!pt->assigned || pt->fenced || pt->retry_at || pt->need_rewind ||
            t - pt->lease_at < STORE_LEASE_RENEW_MS)
            continue;
        now.epoch = -1;
        int rc = store_lease(k->apply->store, k->conf->topic_orders, i, pt->ap.meta.epoch,
                             store_now_ms() + STORE_LEASE_MS, &now, err, sizeof(err));
        if (rc == STORE_ERR && now.epoch < 0) {
            log_debug("consumer", "lease of %s [%d]: %s", k->conf->topic_orders, (int)i, err);
            return; /* Redis is failing: the apply path reports it */
        }
        pt->lease_at = t;
        /* A hand edit while we own it: the partition waits, as a batch
         * would (never read as the "lost writes" below, then from offset
         * 0). */
        if (txn_meta_unreadable(k->apply, &pt->ap, &now, err, sizeof(err)) != APPLY_OK) {
            part_on_result(k, i, pt, APPLY_CORRUPT, err);
            continue;
        }
        /* The renewal is also the look that notices a Redis that went back
         * in time while the partition was quiet (the epoch is the same). */
        if (txn_meta_verdict(&pt->ap, &now) == APPLY_REWIND) {
            snprintf(err, sizeof(err),
                     "%s [%d]: Redis holds offset %" PRId64 " poffset %" PRId64
                     ", older than ours (%" PRId64 ", %" PRId64 "): it lost writes",
                     k->conf->topic_orders, (int)i, now.offset, now.poffset, pt->ap.meta.offset,
                     pt->ap.meta.poffset);
            part_on_result(k, i, pt, APPLY_REWIND, err);
        }
    }
}

/* Gives the lease up when the partition leaves us cleanly. */
static void release_lease(consumer_t *k, int32_t id, part_t *pt) {
    char err[512] = "";
    if (!pt->assigned || pt->fenced) return;
    if (store_lease(k->apply->store, k->conf->topic_orders, id, pt->ap.meta.epoch, 0, NULL, err,
                    sizeof(err)) == STORE_ERR)
        log_warn("consumer", "lease of %s [%d] not released (it lapses in %d s): %s",
                 k->conf->topic_orders, (int)id, STORE_LEASE_MS / 1000, err);
}

/* A partition with no order for idle_close_after reviews its month once
 * the wall clock has passed the month's end. */
static void idle_reviews(consumer_t *k) {
    int64_t t = mono_ms(), wall = now_ms();
    if (t - k->last_idle_check_ms < 1000) return;
    k->last_idle_check_ms = t;
    for (int32_t i = 0; i < k->nparts; i++) {
        part_t *pt = &k->parts[i];
        char err[512] = "";
        if (!pt->assigned || pt->fenced || pt->retry_at || pt->need_rewind || pt->settle_rc ||
            pt->npending || pt->ap.meta.month < 0 || pt->ap.meta.reviewed >= pt->ap.meta.month)
            continue;
        if (t - pt->last_record_ms < k->apply->idle_close_after_ms) continue;
        if (wall < month_start_ms(&k->apply->zone, pt->ap.meta.month + 1)) continue;
        int rc = review_through(k->apply, &pt->ap, pt->ap.meta.month, err, sizeof(err));
        part_on_result(k, i, pt, rc, err);
    }
}

/* Claims a partition.  Patient (a new assignment): retries while Redis is
 * down, bounded so the rebalance callback never holds the poll loop past
 * max.poll.interval.ms (default 300 s): after 120 s, or at shutdown, it
 * gives up.  Otherwise one attempt. */
static int claim(consumer_t *k, int32_t id, part_t *pt, int patient) {
    char err[512];
    int64_t deadline = mono_ms() + 120000, backoff = 100;
    for (;;) {
        err[0] = '\0';
        if (store_claim(k->apply->store, k->conf->topic_orders, id, k->apply->owner, &pt->ap.meta,
                        err, sizeof(err)) == STORE_OK) {
            pt->lease_at = mono_ms(); /* the claim took the lease */
            return 0;
        }
        if (!patient || *k->stop || mono_ms() > deadline) {
            log_error("consumer", "cannot claim %s [%d]: %s", k->conf->topic_orders, (int)id, err);
            return -1;
        }
        log_warn("consumer", "cannot claim %s [%d]: %s; retrying in %" PRId64 " ms",
                 k->conf->topic_orders, (int)id, err, backoff);
        sleep_ms(backoff);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

/* Whether a Redis call still fits: outside shutdown always; on the way
 * out only while Redis answers and a whole redis.timeout_ms remains
 * before the deadline, so no call can carry tierd past it. */
static int time_for_redis(consumer_t *k) {
    if (!k->stopping) return 1;
    return store_connected(k->apply->store) && k->deadline - mono_ms() > k->conf->redis_timeout_ms;
}

/* Publishes one partition's outbox before it leaves us: the round in
 * flight is finished first, then one for this partition; at most 5 s, and
 * never past the shutdown deadline (the next owner publishes the rest). */
static void drain_outbox(consumer_t *k, int32_t id) {
    int64_t until = mono_ms() + 5000;
    int started = 0;
    if (k->stopping && k->deadline < until) until = k->deadline;
    while (mono_ms() < until && time_for_redis(k)) {
        int32_t done[64];
        int nread[64], nleft[64];
        size_t ndone = 0;
        char why[512] = "";
        int64_t wait;
        int busy = publish_outboxes_busy(k->pub);
        if (!busy && started) return;
        if (!busy) k->parts[id].ap.outbox_dirty = 0;
        int rc = publish_outboxes(k->pub, k->apply->store, k->conf->topic_orders, &id, busy ? 0 : 1,
                                  OUTBOX_ROUND_ENTRIES, 100, done, nread, nleft, &ndone, why,
                                  sizeof(why));
        if (rc != 0 && !busy) k->parts[id].ap.outbox_dirty = 1;
        round_done(k, done, nread, nleft, ndone, why[0] != 0, &wait);
        if (rc != 0) return;
        started |= !busy;
    }
}

/* Takes one newly assigned partition: claim (epoch bump), its profiles
 * first when some exist, and the offset Redis holds.  -1: no claim. */
static int assign_one(consumer_t *k, rd_kafka_topic_partition_t *tp) {
    part_t *pt = part_get(k, tp->partition);
    if (!pt || claim(k, tp->partition, pt, 1) != 0) return -1;
    if (pt->ap.meta.bad[0])
        log_error("consumer",
                  "%s [%d]: meta field %s does not parse; nothing of this partition is applied "
                  "until it is repaired (tierctl rebuild)",
                  k->conf->topic_orders, (int)tp->partition, pt->ap.meta.bad);
    else if (pt->ap.meta.orphan)
        log_error("consumer",
                  "%s [%d]: customer states but no offset in meta; nothing of this partition is "
                  "applied until it is repaired (tierctl rebuild)",
                  k->conf->topic_orders, (int)tp->partition);
    pt->assigned = 1;
    pt->fenced = 0;
    pt->need_rewind = 0;
    pt->retry_at = 0;
    pt->backoff = 0;
    pt->ap.topic = k->conf->topic_orders;
    pt->ap.partition = tp->partition;
    pt->ap.outbox_dirty = 1; /* whatever the previous owner left */
    pt->pub_retry_at = pt->pub_backoff = 0;
    pt->last_record_ms = mono_ms();
    pt->next_off = pt->pnext_off = -1;
    pt->past_end[0] = pt->past_end[1] = -1;
    pt->refetch_at[0] = pt->refetch_at[1] = 0;
    pt->skip_to[0] = pt->skip_to[1] = -1;
    pt->verify_at[0] = pt->verify_at[1] = -1;
    /* The record the hash was taken of: the one before the offset, or
     * the last one applied before markers (apply_skip). */
    if (pt->ap.meta.offset > 0 && pt->ap.meta.has_prev_fp) {
        pt->verify_at[0] = pt->ap.meta.prev_at >= 0 ? pt->ap.meta.prev_at : pt->ap.meta.offset - 1;
        pt->verify_fp[0] = pt->ap.meta.prev_fp;
    }
    if (pt->ap.meta.poffset > 0 && pt->ap.meta.has_prev_pfp) {
        pt->verify_at[1] =
            pt->ap.meta.pprev_at >= 0 ? pt->ap.meta.pprev_at : pt->ap.meta.poffset - 1;
        pt->verify_fp[1] = pt->ap.meta.prev_pfp;
    }
    /* Unchecked, a reading starts at the offset Redis holds. */
    pt->taken[0] = pt->verify_at[0] >= 0 ? -1 : pt->ap.meta.offset;
    pt->taken[1] = pt->verify_at[1] >= 0 ? -1 : pt->ap.meta.poffset;
    /* Bootstrap the table before the stream: orders of this partition
     * wait until the profiles that exist now are joined. */
    int64_t lo = 0, hi = 0;
    pt->prof_catchup = -1;
    if (publish_watermarks(k->pub, k->conf->topic_profiles, tp->partition, &lo, &hi, 5000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        hi > lo && pt->ap.meta.poffset < hi) {
        pt->prof_catchup = hi;
        pt->catchup_deadline = mono_ms() + 60000;
    }
    rd_kafka_topic_partition_list_t *l =
        plist(k, tp->partition,
              pt->verify_at[1] >= 0      ? pt->verify_at[1]
              : pt->ap.meta.poffset >= 0 ? pt->ap.meta.poffset
                                         : RD_KAFKA_OFFSET_BEGINNING);
    /* A pause of ours outlives the revocation: cleared before assigning,
     * and only when there is one (see on_assign). */
    if (pt->prof_paused) rd_kafka_resume_partitions(k->prk, l);
    pt->prof_paused = 0;
    rd_kafka_error_t *pe = rd_kafka_incremental_assign(k->prk, l);
    if (pe) {
        log_error("consumer", "assign %s [%d]: %s", k->conf->topic_profiles, (int)tp->partition,
                  rd_kafka_error_string(pe));
        rd_kafka_error_destroy(pe);
    }
    rd_kafka_topic_partition_list_destroy(l);
    tp->offset = pt->read_from = pt->verify_at[0] >= 0     ? pt->verify_at[0]
                                 : pt->ap.meta.offset >= 0 ? pt->ap.meta.offset
                                                           : RD_KAFKA_OFFSET_BEGINNING;
    log_info("consumer", "assigned %s [%d] at offset %" PRId64 "%s (epoch %" PRId64 ")", tp->topic,
             (int)tp->partition, pt->ap.meta.offset,
             pt->ap.meta.offset >= 0 ? "" : " (no state: from the beginning)", pt->ap.meta.epoch);
    return 0;
}

static rd_kafka_error_t *on_assign(consumer_t *k, rd_kafka_t *rk,
                                   rd_kafka_topic_partition_list_t *parts, int cooperative) {
    rd_kafka_error_t *e = NULL;
    for (int i = 0; i < parts->cnt; i++) {
        if (assign_one(k, &parts->elems[i]) == 0) continue;
        k->fatal = 1;
        *k->stop = 1;
        parts->elems[i].offset = RD_KAFKA_OFFSET_END; /* assign anyway; we are leaving */
    }
    /* librdkafka keeps an application pause across revoke and re-assign (a
     * partition paused when it was fenced would stay silent), so clear it:
     * BEFORE assigning.  A resume after the assignment bumps the
     * partition's op version while its start offset is being looked up,
     * librdkafka 2.0.2 drops that answer as outdated and asks again only
     * after 500 ms: every assignment started half a second late. */
    rd_kafka_resume_partitions(rk, parts);
    for (int i = 0; i < parts->cnt; i++) {
        part_t *pt = part_get(k, parts->elems[i].partition);
        if (pt) pt->paused = 0;
    }
    if (cooperative)
        e = rd_kafka_incremental_assign(rk, parts);
    else
        rd_kafka_assign(rk, parts);
    for (int i = 0; i < parts->cnt; i++) {
        part_t *pt = part_get(k, parts->elems[i].partition);
        if (!pt || pt->prof_catchup < 0) continue;
        part_pause(k, parts->elems[i].partition, pt, 0); /* orders wait; profiles flow */
        log_info("consumer", "%s [%d]: joining %s up to offset %" PRId64 " first",
                 k->conf->topic_orders, (int)parts->elems[i].partition, k->conf->topic_profiles,
                 pt->prof_catchup);
    }
    return e;
}

/* Gives one partition up: finishes what it holds unless it was lost (a
 * new owner may already write: the epoch would refuse us), or it waits on
 * a retry, or the way out has no time left; what is not committed is read
 * again by its next owner.  A partition waiting on a retry still gives its
 * lease back: one paused on a broken state waits for `tierctl rebuild`,
 * which refuses while the lease runs. */
static void revoke_one(consumer_t *k, int32_t id, int lost) {
    part_t *pt = part_get(k, id);
    if (!pt) return;
    if (!lost && pt->assigned && !pt->need_rewind && time_for_redis(k)) {
        char why[512] = "";
        if (!pt->retry_at && part_flush_profiles(k, id, pt, why, sizeof(why)) == APPLY_OK &&
            part_flush(k, id, pt, why, sizeof(why)) == APPLY_OK && pt->ap.outbox_dirty)
            drain_outbox(k, id);
        release_lease(k, id, pt);
    }
    if (pt->assigned && pt->settle_rc)
        log_warn("consumer", "%s; the partition leaves us as it is", pt->settle_err);
    part_drop_pending(k, pt);
    publish_dead_forget(k->pub, k->conf->topic_orders, id, INT64_MAX);
    publish_dead_forget(k->pub, k->conf->topic_profiles, id, INT64_MAX);
    if (pt->assigned) {
        rd_kafka_topic_partition_list_t *l = plist(k, id, RD_KAFKA_OFFSET_INVALID);
        rd_kafka_error_t *pe = rd_kafka_incremental_unassign(k->prk, l);
        if (pe) rd_kafka_error_destroy(pe);
        rd_kafka_topic_partition_list_destroy(l);
    }
    pt->assigned = 0;
    pt->fenced = 0;
    pt->retry_at = 0;
    pt->need_rewind = 0;
    pt->settle_rc = 0;
    log_info("consumer", "%s %s [%d]", lost ? "lost" : "revoked", k->conf->topic_orders, (int)id);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    consumer_t *k = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        e = on_assign(k, rk, parts, cooperative);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        int lost = rd_kafka_assignment_lost(rk);
        for (int i = 0; i < parts->cnt; i++) revoke_one(k, parts->elems[i].partition, lost);
        if (cooperative)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    } else {
        log_error("consumer", "rebalance error: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
    if (e) {
        log_error("consumer", "assignment change failed: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    consumer_t *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        log_error("kafka", "fatal: %s; shutting down", why);
        k->fatal = 1;
        *k->stop = 1;
        return;
    }
    /* Broker down, transport errors: librdkafka reconnects on its own and
     * its log callback has already said so; only all-brokers-down and the
     * unexpected are worth a second line. */
    log_at(err == RD_KAFKA_RESP_ERR__TRANSPORT ? LOG_DEBUG : LOG_WARN, "kafka", "%s: %s",
           rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* The prefetch.  librdkafka's fetcher (a broker thread) sends a Fetch while
 * the consumer queue holds fewer than queued.min.messages records and
 * queued.max.messages.kbytes of payload, and enqueues the whole response:
 * the bounds say when to fetch, not how much.  A response holds up to
 * fetch.max.bytes (which librdkafka sets to queued.max.messages.kbytes
 * unless kafka.* names it, and to at least message.max.bytes, 1 MB), and
 * at least one whole record batch of its first partition (a producer's
 * batch, up to 1 MB).  librdkafka's defaults (100 000 records, 64 MB) put
 * a whole backlog in memory; 8 MB still let 8 MB responses in, 90 000 of
 * the bench's 82-byte orders at once, each a ~300-byte op and the response
 * kept while one of its records is.  So: 2 000 records and 1 MB (about one
 * producer batch) by default, unless kafka.* says otherwise.
 *
 * Once a bound is reached, librdkafka 2.0.2's broker thread looks at the
 * queue again only when something wakes it, or after a second (librdkafka
 * 2.2 added fetch.queue.backoff.ms for this): with small bounds the drain
 * would wait on that second (12 k orders/s instead of 42 k/s).  So when the
 * loop finds the queue empty and it may have reached a bound since the
 * last wake-up, prefetch_wake wakes the fetcher.  See docs/design.md. */
static void prefetch_bound(const config_t *c, rd_kafka_conf_t *conf) {
    char why[256];
    if (!config_kafka_get(c, "queued.min.messages"))
        rd_kafka_conf_set(conf, "queued.min.messages", "2000", why, sizeof(why));
    if (!config_kafka_get(c, "queued.max.messages.kbytes"))
        rd_kafka_conf_set(conf, "queued.max.messages.kbytes", "1024", why, sizeof(why));
}

static size_t conf_size(rd_kafka_t *rk, const char *name, size_t dflt) {
    char v[32];
    size_t n = sizeof(v);
    if (rd_kafka_conf_get(rd_kafka_conf(rk), name, v, &n) != RD_KAFKA_CONF_OK) return dflt;
    long long x = strtoll(v, NULL, 10);
    return x > 0 ? (size_t)x : dflt;
}

/* Once rk is a consumer (rd_kafka_poll_set_consumer). */
static void prefetch_init(prefetch_t *pf, rd_kafka_t *rk) {
    pf->q = rd_kafka_queue_get_consumer(rk);
    pf->min_msgs = conf_size(rk, "queued.min.messages", 100000);
    pf->max_bytes = conf_size(rk, "queued.max.messages.kbytes", 65536) * 1000;
}

/* A turn took `got` records of `bytes` payload from a queue that held
 * `queued` records as it began.  The fetcher looks at the queue as it
 * enqueues a response; what it saw then was polled in the rest of that
 * turn (last_got at most) and what the next turn found, so a bound it
 * reached shows here (the bytes estimated at this turn's mean size). */
static void prefetch_note(prefetch_t *pf, size_t queued, size_t got, size_t bytes) {
    size_t mean = got ? bytes / got : 0;
    if (queued + pf->last_got >= pf->min_msgs || got >= pf->min_msgs ||
        queued * mean + pf->last_bytes >= pf->max_bytes || bytes >= pf->max_bytes)
        pf->stalled = 1;
    pf->last_got = got;
    pf->last_bytes = bytes;
}

/* Wakes a fetcher that may be waiting out its second, once the loop found
 * the queue empty.  A seek to a concrete offset wakes the partition's
 * broker thread at once, which then looks at the queue again (a pause and
 * a resume do not: librdkafka's main thread serves them and leaves the
 * broker thread asleep).  Each partition seeks to the
 * offset after the last record polled: where the fetcher would go on.  A
 * seek drops what was fetched beyond it: with the queue empty that is at
 * most a response in flight, fetched again; nothing is skipped, and the
 * records the loop holds stay valid.  Only partitions that are not paused
 * for their own reasons and have delivered a record since their
 * assignment or last seek (so are fetching, past any offset lookup). */
static void prefetch_wake(consumer_t *k, rd_kafka_t *rk, prefetch_t *pf, int orders) {
    if (!pf->stalled || k->stopping) return;
    pf->stalled = 0;
    const char *topic = orders ? k->conf->topic_orders : k->conf->topic_profiles;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int32_t i = 0; i < k->nparts; i++) {
        part_t *pt = &k->parts[i];
        int64_t at = orders ? pt->next_off : pt->pnext_off;
        if (!pt->assigned || pt->fenced || pt->retry_at || pt->need_rewind || at < 0) continue;
        if (orders && pt->prof_catchup >= 0) continue;
        rd_kafka_topic_partition_list_add(l, topic, i)->offset = at;
    }
    if (l->cnt > 0) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(rk, l, 0); /* not waited for */
        if (e) {
            log_debug("consumer", "waking the %s fetcher: %s", topic, rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

consumer_t *consumer_new(const config_t *c, apply_ctx_t *apply, publish_t *pub, char *errstr,
                         size_t errstr_size) {
    /* auto.offset.reset=error: a position outside the log is tierd's to
     * handle (out_of_range), never a silent jump.  read_committed (also
     * librdkafka's default): an aborted transaction's records never count,
     * and none of an open one's before it commits. */
    static const char *const pfixed[] = {
        "enable.auto.offset.store", "false", /* poffset lives in Redis */
        "enable.auto.commit",       "false", /* assigned by hand: no group */
        "auto.offset.reset",        "error", "isolation.level", "read_committed", NULL};
    static const char *const fixed[] = {
        "enable.auto.offset.store", "false", /* stored after each applied batch */
        "enable.auto.commit",       "true",  /* advisory: Redis holds the truth */
        "auto.offset.reset",        "error", "isolation.level", "read_committed", NULL};
    consumer_t *k = calloc(1, sizeof(*k));
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics = NULL;
    char why[512];
    rd_kafka_resp_err_t err;

    if (!k) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    k->conf = c;
    k->apply = apply;
    apply->settled = on_settled; /* batches go to Redis without waiting for EXEC's reply */
    apply->settled_opaque = k;
    k->pub = pub;
    for (size_t i = 1; i < ORDER_ERR__COUNT && i <= METRICS_MAX_REASONS; i++)
        k->reason_names[i - 1] = order_reason_code((order_err_t)i); /* 0 is ORDER_OK */
    /* The profiles handle: no subscription, assigned partition by partition. */
    conf = kafkaconf_build(c, pfixed, errstr, errstr_size);
    if (!conf) goto fail;
    prefetch_bound(c, conf);
    k->prk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!k->prk) {
        snprintf(errstr, errstr_size, "kafka consumer (profiles): %s", why);
        goto fail;
    }
    conf = NULL; /* now owned by prk */
    rd_kafka_poll_set_consumer(k->prk);
    prefetch_init(&k->ppf, k->prk);
    k->prkt = rd_kafka_topic_new(k->prk, c->topic_profiles, NULL); /* see rkt */
    conf = kafkaconf_build(c, fixed, errstr, errstr_size);
    if (!conf) goto fail;
    /* Defaults that the operator may override in kafka.* */
    if (!config_kafka_get(c, "partition.assignment.strategy"))
        rd_kafka_conf_set(conf, "partition.assignment.strategy", "cooperative-sticky", why,
                          sizeof(why));
    prefetch_bound(c, conf);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, k);
    k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!k->rk) {
        snprintf(errstr, errstr_size, "kafka consumer: %s", why);
        goto fail;
    }
    conf = NULL; /* now owned by rk */
    rd_kafka_poll_set_consumer(k->rk);
    prefetch_init(&k->pf, k->rk);
    k->rkt = rd_kafka_topic_new(k->rk, c->topic_orders, NULL);
    /* The loop waits for records and delivery reports at once. */
    if (k->pf.q) publish_wake_on_reports(pub, k->pf.q);
    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, c->topic_orders, RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(k->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe to %s: %s", c->topic_orders,
                 rd_kafka_err2str(err));
        goto fail;
    }
    return k;
fail:
    if (conf) rd_kafka_conf_destroy(conf);
    consumer_destroy(k);
    return NULL;
}

void consumer_set_metrics(consumer_t *k, metrics_t *m) {
    k->metrics = m;
}

/* Outbox entries waiting, over the assigned partitions (one XLEN each,
 * pipelined; kept from the last look when Redis does not answer). */
static void outbox_depth(consumer_t *k) {
    store_tx_t tx = {0};
    char key[256];
    redisReply *r[METRICS_MAX_PARTS];
    size_t n = 0;
    for (int32_t i = 0; i < k->nparts && n < METRICS_MAX_PARTS; i++) {
        if (!k->parts[i].assigned) continue;
        store_key(k->apply->store, k->conf->topic_orders, i, "outbox", key, sizeof(key));
        if (store_tx_addv(&tx, 2, "XLEN", (size_t)4, key, strlen(key)) != 0) goto out;
        n++;
    }
    if (n == 0) {
        k->outbox_depth = 0;
        goto out;
    }
    char err[256];
    if (store_pipeline(k->apply->store, &tx, r, err, sizeof(err)) != STORE_OK) goto out;
    uint64_t depth = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i]->type == REDIS_REPLY_INTEGER && r[i]->integer > 0)
            depth += (uint64_t)r[i]->integer;
        freeReplyObject(r[i]);
    }
    k->outbox_depth = depth;
out:
    store_tx_free(&tx);
}

/* Once a second (and at the end): the snapshot /metrics and the probes
 * serve. */
static void publish_metrics(consumer_t *k, int force) {
    metrics_snapshot_t *s = &k->snap;
    int64_t t = mono_ms();
    if (!k->metrics || (!force && t - k->last_metrics_ms < 1000)) return;
    const apply_stats_t *a = &k->apply->stats;
    int nup = 0; /* assigned partitions whose Redis node answers */
    memset(s, 0, sizeof(*s));
    s->applied = a->applied;
    s->duplicates = a->duplicates;
    s->redelivered = a->redelivered;
    s->dead = a->dead;
    s->batches = a->batches;
    s->fenced = a->fenced;
    s->state_corrupt = a->state_corrupt;
    s->review_pages = a->review_pages;
    s->reviews = a->reviews;
    s->profiles = a->profiles;
    for (size_t i = 1; i < ORDER_ERR__COUNT && i <= METRICS_MAX_REASONS; i++) {
        s->dead_by_reason[i - 1] = a->dead_by_reason[i]; /* 0 is ORDER_OK */
        s->nreasons = i;
    }
    s->reason_names = k->reason_names;
    s->tier_events = a->tier_events;
    s->quota_events = a->quota_events;
    memcpy(s->quota_by_kind, a->quota_by_kind, sizeof(s->quota_by_kind));
    s->events_published = publish_events_published(k->pub);
    s->dead_standins = publish_dead_standins(k->pub);
    s->dead_lost = publish_dead_lost(k->pub);
    s->read_errors[0] = k->rerr.total;
    s->read_errors[1] = k->prerr.total;
    memcpy(s->deleted_unread, k->deleted_unread, sizeof(s->deleted_unread));
    for (int32_t i = 0; i < k->nparts; i++)
        for (int input = 0; input < 2; input++)
            s->past_end[input] += k->parts[i].assigned && k->parts[i].past_end[input] >= 0;
    if (store_connected(k->apply->store)) outbox_depth(k);
    s->outbox_depth = k->outbox_depth;
    s->redis_commands = store_commands(k->apply->store);
    store_redirects(k->apply->store, s->redis_redirects);
    store_rtt(k->apply->store, &s->redis_rtt_seconds_sum, &s->redis_rtt_count,
              s->redis_rtt_buckets);
    s->batch_records_sum = a->applied + a->duplicates + a->redelivered + a->dead;
    s->batch_count = a->batches;
    s->review_seconds_sum = a->review_seconds;
    s->review_count = a->reviews;
    s->order_latency_sum = k->lat_sum;
    s->order_latency_count = k->lat_count;
    memcpy(s->order_latency_buckets, k->lat_buckets, sizeof(s->order_latency_buckets));
    for (int32_t i = 0; i < k->nparts && s->nparts < METRICS_MAX_PARTS; i++) {
        part_t *pt = &k->parts[i];
        if (!pt->assigned) continue;
        int64_t lo = -1, hi = -1;
        /* Redis' offset: a batch in the air has not moved it yet. */
        int64_t next = apply_in_flight(k->apply, i) ? k->apply->flight.from : pt->ap.meta.offset;
        s->parts[s->nparts].partition = i;
        s->parts[s->nparts].assigned = 1;
        s->parts[s->nparts].committed = next;
        s->parts[s->nparts].lag = -1;
        s->parts[s->nparts].node_up =
            store_partition_node(k->apply->store, k->conf->topic_orders, i,
                                 s->parts[s->nparts].node, sizeof(s->parts[s->nparts].node));
        nup += s->parts[s->nparts].node_up;
        for (int input = 0; input < 2; input++)
            s->parts[s->nparts].waits[input] = pt->past_end[input] < 0 ? 0
                                               : pt->differs[input]    ? METRICS_WAIT_DIFFERS
                                                                       : METRICS_WAIT_PAST_END;
        if (rd_kafka_get_watermark_offsets(k->rk, k->conf->topic_orders, i, &lo, &hi) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi >= 0 && next >= 0)
            s->parts[s->nparts].lag = hi > next ? hi - next : 0;
        s->nparts++;
    }
    double secs = k->last_metrics_ms ? (double)(t - k->last_metrics_ms) / 1000.0 : 0;
    s->orders_per_second = secs > 0 ? (double)(a->applied - k->metrics_applied) / secs : 0.0;
    /* Ready: orders are being applied -- some partition is ours and its
     * Redis node answers (on a cluster, the partitions of a shard that is
     * down wait while the others go on).  Healthy: the loop turns (the
     * snapshot's age says so). */
    s->ready = nup > 0 && !k->fatal && !*k->stop;
    s->healthy = !k->fatal;
    s->policy_name = k->apply->policy ? k->apply->policy->name : "";
    s->policy_version = k->apply->policy ? k->apply->policy->version : "";
    metrics_publish(k->metrics, s);
    k->last_metrics_ms = t;
    k->metrics_applied = a->applied;
}

static void report(consumer_t *k, int force) {
    int64_t t = mono_ms();
    const apply_stats_t *s = &k->apply->stats;
    if (!force && t - k->last_report_ms < 10000) return;
    double secs = k->last_report_ms ? (double)(t - k->last_report_ms) / 1000.0 : 0;
    uint64_t seen = s->applied + s->duplicates + s->redelivered + s->dead;
    log_info("stats",
             "applied=%" PRIu64 " duplicates=%" PRIu64 " redelivered=%" PRIu64 " dead=%" PRIu64
             " batches=%" PRIu64 " fenced=%" PRIu64 " reviews=%" PRIu64 " profiles=%" PRIu64
             " return_excess_units=%" PRIu64 " redis_cmds=%" PRIu64
             " cmds_per_record=%.4f rate=%.0f/s",
             s->applied, s->duplicates, s->redelivered, s->dead, s->batches, s->fenced, s->reviews,
             s->profiles, s->return_excess_units, store_commands(k->apply->store),
             seen ? (double)store_commands(k->apply->store) / (double)seen : 0.0,
             secs > 0 ? (double)(s->applied - k->last_applied) / secs : 0.0);
    k->last_report_ms = t;
    k->last_applied = s->applied;
}

/* Leaves the group without waiting past the deadline: the close runs in
 * librdkafka's background and its rebalance events come back here. */
static void close_consumer(consumer_t *k, rd_kafka_t *rk, const char *what) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(rk, q);
    if (e) {
        log_warn("consumer", "closing the %s consumer: %s", what, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else {
        while (!rd_kafka_consumer_closed(rk)) {
            if (mono_ms() >= k->deadline) {
                log_warn("consumer",
                         "the %s consumer did not close within shutdown_timeout_ms "
                         "(%" PRId64 " ms); leaving without it",
                         what, k->conf->shutdown_timeout_ms);
                break;
            }
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (!ev) continue;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                rebalance_cb(rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev),
                             k);
            rd_kafka_event_destroy(ev);
        }
    }
    rd_kafka_queue_destroy(q);
}

/* Partition id's reading of input (0 orders, 1 profiles) waits: the
 * topic does not hold what tierd read up to `held`, for the reason `why`
 * names.  Its profile catch-up ends (the orders go on with the profiles
 * they have, or wait, and their profiles with them); only an operator
 * ends the wait (out_of_range_tick says it again every minute). */
static void part_wait(consumer_t *k, int input, int32_t id, part_t *pt, int64_t held, int differs,
                      const char *why) {
    pt->past_end[input] = held;
    pt->differs[input] = differs;
    pt->past_end_said = mono_ms();
    pt->prof_catchup = -1;
    /* Profiles: theirs only (past_end), the orders' as they were. */
    part_pause(k, id, pt, !input || pt->retry_at);
    log_error("consumer",
              "%s [%d]: %s.  Records now below %" PRId64 " would be taken for ones already "
              "applied, so reading %s waits (%s); see \"An input topic made again\" in "
              "docs/operations.md",
              input ? k->conf->topic_profiles : k->conf->topic_orders, (int)id, why, held,
              input ? "its profiles" : "it",
              input ? "its orders go on with the profiles they have"
                    : "the other partitions go on");
}

/* The record before the offset Redis holds, read first: is it the one
 * the last batch applied there?  Not: the topic was made again (it has
 * grown past that offset, or librdkafka's error would have said so,
 * out_of_range) and the partition waits as one past the topic's end. */
static void topic_check(consumer_t *k, int input, part_t *pt, const rd_kafka_message_t *m) {
    char why[200];
    pt->verify_at[input] = -1;
    if (state_order_fp(m->payload, m->len) == pt->verify_fp[input]) {
        /* Between it and the offset held: markers at most. */
        pt->taken[input] = *store_meta_input(&pt->ap.meta, input).offset;
        return;
    }
    snprintf(why, sizeof(why),
             "the record at offset %" PRId64 " is not the one tierd applied there: the topic "
             "was deleted and made again, or its records rewritten",
             m->offset);
    part_wait(k, input, m->partition, pt, *store_meta_input(&pt->ap.meta, input).offset, 1, why);
}

/* Whether m is for topic_check, or past it: 1 when m was the record to
 * check, or is below it (m is then the caller's to drop). */
static int checked(consumer_t *k, int input, part_t *pt, const rd_kafka_message_t *m) {
    if (pt->verify_at[input] < 0) return 0;
    if (m->offset > pt->verify_at[input]) {
        pt->verify_at[input] = -1; /* that offset held a marker, or was deleted */
        return 0;
    }
    if (m->offset == pt->verify_at[input]) topic_check(k, input, pt, m);
    return 1;
}

static void out_of_range(consumer_t *k, int input, const rd_kafka_message_t *m);

/* Appends a polled record to its partition's pending batch. */
/* now: mono_ms() of the turn that polled m. */
static int enqueue(consumer_t *k, rd_kafka_message_t *m, int64_t now) {
    part_t *pt = part_get(k, m->partition);
    /* Dropped: not ours (any more), not the topic we read, or polled
     * before a reading again that is due (a record past a gap). */
    if (!pt || !pt->assigned || pt->fenced || pt->need_rewind || pt->past_end[0] >= 0 ||
        pt->refetch_at[0]) {
        rd_kafka_message_destroy(m);
        return 0;
    }
    if (fault_out_of_range(&k->apply->fault, m->partition, m->offset)) { /* test builds only */
        out_of_range(k, 0, m);
        rd_kafka_message_destroy(m);
        return 0;
    }
    if (checked(k, 0, pt, m)) {
        rd_kafka_message_destroy(m);
        return 0;
    }
    pt->last_record_ms = now;
    pt->next_off = m->offset + 1;
    if (pt->npending == pt->cap) {
        size_t cap = pt->cap ? pt->cap * 2 : 256;
        rd_kafka_message_t **np = realloc(pt->pending, cap * sizeof(*np));
        if (!np) {
            rd_kafka_message_destroy(m);
            return -1;
        }
        pt->pending = np;
        pt->cap = cap;
    }
    if (pt->npending == 0 && pt->prof.n == 0) pt->due_ms = now + k->conf->batch_max_ms;
    pt->pending[pt->npending++] = m;
    pt->taken[0] = m->offset + 1;
    k->npending++;
    return 0;
}

/* An error the consumer handed over in place of a record (m->err set). */
static void read_error(read_errors_t *re, const char *topic, const rd_kafka_message_t *m) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return;
    re->total++;
    int64_t t = mono_ms();
    if (re->logged_at && t - re->logged_at < READ_ERROR_LOG_MS) {
        re->unlogged++;
        return;
    }
    if (re->unlogged)
        log_warn("consumer", "cannot read topic %s: %s%s; %" PRIu64 " more errors in %d s", topic,
                 rd_kafka_message_errstr(m), kafkaconf_refusal_hint(m->err, 0), re->unlogged,
                 (int)((t - re->logged_at) / 1000));
    else
        log_warn("consumer", "cannot read topic %s: %s%s", topic, rd_kafka_message_errstr(m),
                 kafkaconf_refusal_hint(m->err, 0));
    re->unlogged = 0;
    re->logged_at = t;
}

/* A record arrived: after errors, say the topic reads again. */
static void read_ok(read_errors_t *re, const char *topic) {
    if (!re->logged_at) return;
    log_info("consumer", "topic %s reads again (%" PRIu64 " errors in all since start)", topic,
             re->total);
    re->logged_at = 0;
    re->unlogged = 0;
}

/* A fetch position outside its partition's log.  tierd sets
 * auto.offset.reset=error: librdkafka then stops the partition and says
 * so, where "earliest" would jump back silently (the records after a
 * topic was made again would come with offsets Redis holds as applied,
 * and be skipped as redeliveries) and "latest" forward. */

/* The wait before reading again at an offset the broker called out of
 * range though its ends hold it. */
#define REFETCH_DELAY_MS 500

/* Starts reading partition id of input (0 orders, 1 profiles) again at
 * offset.  A partition librdkafka stopped takes no seek (_STATE), only a
 * new assignment: of it alone, or under an eager protocol of the whole
 * assignment, each other partition at its position. */
static void refetch(consumer_t *k, int input, int32_t id, int64_t offset) {
    rd_kafka_t *rk = input ? k->prk : k->rk;
    const char *topic = input ? k->conf->topic_profiles : k->conf->topic_orders;
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_error_t *e = NULL;
    if (strcmp(rd_kafka_rebalance_protocol(rk), "EAGER") != 0) {
        l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, id)->offset = offset;
        e = rd_kafka_incremental_unassign(rk, l);
        if (!e) e = rd_kafka_incremental_assign(rk, l);
    } else if (rd_kafka_assignment(rk, &l) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_position(rk, l);
        for (int i = 0; i < l->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &l->elems[i];
            part_t *o = part_get(k, tp->partition);
            if (tp->partition == id)
                tp->offset = offset;
            else if (tp->offset < 0 && o) /* nothing handed over since its reading started */
                tp->offset = o->read_from;
            if (o) o->read_from = tp->offset; /* the assignment starts each reading again */
        }
        rd_kafka_resp_err_t err = rd_kafka_assign(rk, l);
        if (err) e = rd_kafka_error_new(err, "%s", rd_kafka_err2str(err));
    }
    if (e) {
        log_error("consumer", "%s [%d]: cannot read again from offset %" PRId64 ": %s", topic,
                  (int)id, offset, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    if (l) rd_kafka_topic_partition_list_destroy(l);
    part_t *pt = part_get(k, id);
    if (pt && input) {
        pt->pnext_off = -1;
    } else if (pt) {
        pt->next_off = -1;
        pt->read_from = offset;
    }
    if (pt) pt->taken[input] = -1; /* records before offset may have been dropped */
}

/* librdkafka's _AUTO_OFFSET_RESET for m's partition of input: the reading
 * goes on after offsets the broker deleted (retention), which are counted
 * and said; it waits when the offset tierd holds lies past the topic's
 * end (out_of_range_tick repeats that).  An error the broker's ends do
 * not explain (a leader that just changed) is read again a little later:
 * at once, a broker that keeps saying so would have tierd spin. */
static void out_of_range(consumer_t *k, int input, const rd_kafka_message_t *m) {
    const char *topic = input ? k->conf->topic_profiles : k->conf->topic_orders;
    const char *what = input ? "profiles" : "orders";
    int32_t id = m->partition;
    part_t *pt = part_get(k, id);
    if (!pt || !pt->assigned) return;
    int64_t at = m->offset, held = *store_meta_input(&pt->ap.meta, input).offset, lo, hi;
    /* Asked for the record before the offset held, to check it
     * (topic_check): past the end means past the offset held. */
    int checking = pt->verify_at[input] >= 0 && at == pt->verify_at[input];
    rd_kafka_resp_err_t err = publish_watermarks(k->pub, topic, id, &lo, &hi, 5000);
    if (err) {
        log_warn("consumer",
                 "%s [%d]: offset %" PRId64 " is out of range and the partition's "
                 "ends are unknown (%s); reading from it again in %d ms",
                 topic, (int)id, at, rd_kafka_err2str(err), REFETCH_DELAY_MS);
        pt->refetch_at[input] = mono_ms() + REFETCH_DELAY_MS;
        pt->refetch_off[input] = at;
        return;
    }
    if (at > hi) {
        char why[200];
        if (checking) at = held;
        snprintf(why, sizeof(why),
                 "tierd holds this partition as read up to offset %" PRId64
                 ", but the topic ends at %" PRId64 ": it was deleted and made again, or the "
                 "broker lost records (an unclean leader election)",
                 at, hi);
        part_wait(k, input, id, pt, at, 0, why);
        return;
    }
    if (at < lo) {
        int64_t from = held > at ? held : at;
        if (from < lo) {
            k->deleted_unread[input] += (uint64_t)(lo - from);
            log_error("consumer",
                      "%s [%d]: offsets %" PRId64 "..%" PRId64 " were deleted by the broker "
                      "(retention) before tierd read them: up to %" PRId64 " %s lost; "
                      "reading on from offset %" PRId64,
                      topic, (int)id, from, lo - 1, lo - from, what, lo);
        }
        if (held < lo) {
            pt->skip_to[input] = lo;
            pt->skip_keep[input] = 0; /* the record hashed may be gone */
        }
        refetch(k, input, id, lo);
        return;
    }
    log_warn("consumer",
             "%s [%d]: offset %" PRId64 " was out of range for a moment (the "
             "partition holds %" PRId64 "..%" PRId64 "); reading from it again in %d ms",
             topic, (int)id, at, lo, hi - 1, REFETCH_DELAY_MS);
    pt->refetch_at[input] = mono_ms() + REFETCH_DELAY_MS;
    pt->refetch_off[input] = at;
}

/* Reads again what is due (out_of_range); once a minute, each partition
 * whose reading waits past its topic's end says so again. */
static void out_of_range_tick(consumer_t *k) {
    int64_t t = mono_ms();
    for (int32_t i = 0; i < k->nparts; i++) {
        part_t *pt = &k->parts[i];
        for (int input = 0; pt->assigned && input < 2; input++)
            if (pt->refetch_at[input] && t >= pt->refetch_at[input]) {
                pt->refetch_at[input] = 0;
                refetch(k, input, i, pt->refetch_off[input]);
            }
        if (!pt->assigned || t - pt->past_end_said < 60000) continue;
        for (int input = 0; input < 2; input++) {
            if (pt->past_end[input] < 0) continue;
            pt->past_end_said = t;
            log_error("consumer",
                      "%s [%d]: still waiting: the topic does not hold what tierd read up to "
                      "offset %" PRId64 " (made again?)",
                      input ? k->conf->topic_profiles : k->conf->topic_orders, (int)i,
                      pt->past_end[input]);
        }
    }
}

/* A transactional producer's commit or abort marker takes an offset
 * after its records, and no record ever comes for it (nor for an aborted
 * transaction's records, which read_committed leaves out).  librdkafka
 * moves a partition's position past them once the records before them
 * are handed over.  A partition of input that has applied everything it
 * was handed over, up to the offset Redis holds, and is no longer waiting
 * on anything, is moved up to that position (apply_skip): its lag then
 * says 0, and the profiles' catch-up (catchup_check) ends.  Else a
 * transactional input's partitions would keep a lag of 1 for good, and
 * each assignment wait 60 s for profiles that never come.  A partition
 * sought back (rewind_part) has no position until a record at the new
 * offset is handed over (librdkafka; tests/integration/seek_position.c
 * holds it to that), so records read again are never taken for markers. */
static void marker_tick(consumer_t *k, int input) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    const char *topic = input ? k->conf->topic_profiles : k->conf->topic_orders;
    for (int32_t i = 0; i < k->nparts; i++) {
        part_t *pt = &k->parts[i];
        int64_t taken = pt->taken[input];
        int64_t held = *store_meta_input(&pt->ap.meta, input).offset;
        size_t n = input ? pt->prof.n : pt->npending;
        if (!pt->assigned || pt->fenced || pt->need_rewind || pt->settle_rc || pt->retry_at ||
            pt->past_end[input] >= 0 || pt->refetch_at[input] || pt->verify_at[input] >= 0 ||
            n > 0 || (!input && apply_in_flight(k->apply, i)) || taken < 0 || taken != held)
            continue;
        rd_kafka_topic_partition_list_add(l, topic, i);
    }
    if (l->cnt > 0 && rd_kafka_position(input ? k->prk : k->rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int j = 0; j < l->cnt; j++) {
            part_t *pt = &k->parts[l->elems[j].partition];
            int64_t at = l->elems[j].offset;
            if (l->elems[j].err || at <= pt->taken[input] || at <= pt->skip_to[input]) continue;
            if (pt->skip_to[input] < 0) pt->skip_keep[input] = 1; /* else records were deleted */
            pt->skip_to[input] = at;
        }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Profiles: whatever has arrived, without waiting; they are applied at
 * once unless orders of the partition are gathering. */
static void poll_profiles(consumer_t *k) {
    size_t queued = k->ppf.q ? rd_kafka_queue_length(k->ppf.q) : 0, got = 0, bytes = 0;
    int empty = 0;
    for (; got < 5000; got++) {
        rd_kafka_message_t *pm = rd_kafka_consumer_poll(k->prk, 0);
        if (!pm) {
            empty = 1;
            break;
        }
        bytes += pm->len;
        if (pm->err) {
            if (pm->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET)
                out_of_range(k, 1, pm);
            else
                read_error(&k->prerr, k->conf->topic_profiles, pm);
            rd_kafka_message_destroy(pm);
            continue;
        }
        read_ok(&k->prerr, k->conf->topic_profiles);
        part_t *pt = part_get(k, pm->partition);
        if (pt) pt->pnext_off = pm->offset + 1;
        if (!pt || !pt->assigned || pt->fenced || pt->need_rewind || pt->past_end[1] >= 0 ||
            pt->refetch_at[1] || checked(k, 1, pt, pm)) {
            rd_kafka_message_destroy(pm);
            continue;
        }
        if (pending_push(&pt->prof, pm) != 0) { /* as for orders: never read past it */
            rd_kafka_message_destroy(pm);
            log_error("consumer", "out of memory; shutting down");
            k->fatal = 1;
            *k->stop = 1;
            break;
        }
        pt->taken[1] = pm->offset + 1;
        if (pt->npending == 0) pt->due_ms = mono_ms();
    }
    prefetch_note(&k->ppf, queued, got, bytes);
    if (empty) prefetch_wake(k, k->prk, &k->ppf, 0);
}

/* The way out, within shutdown_timeout_ms: the batches in hand are
 * applied once (none that waits on a retry), the outboxes published, the
 * group left.  What does not fit is read again at the next start. */
static void shut_down(consumer_t *k) {
    k->stopping = 1;
    k->deadline = mono_ms() + k->conf->shutdown_timeout_ms;
    log_info("consumer", "stopping: applying %zu pending records (at most %" PRId64 " ms)",
             k->npending, k->conf->shutdown_timeout_ms);
    for (int32_t i = 0; i < k->nparts && time_for_redis(k); i++) {
        part_t *pt = &k->parts[i];
        if (!pt->assigned || pt->retry_at || pt->need_rewind) continue;
        if (pt->npending == 0 && pt->prof.n == 0) continue;
        if (part_service(k, i, pt) != APPLY_OK) break; /* Redis is failing: leave the rest */
    }
    if (time_for_redis(k)) apply_settle(k->apply); /* the last batch sent */
    for (int32_t i = 0; i < k->nparts; i++)
        if (k->parts[i].assigned && k->parts[i].settle_rc)
            log_warn("consumer", "%s; the next start consumes it again", k->parts[i].settle_err);
    /* Half of what is left for publishing; the rest for leaving the group. */
    int64_t publish_until = mono_ms() + (k->deadline - mono_ms()) / 2;
    while (mono_ms() < publish_until && time_for_redis(k)) {
        int dirty = 0;
        int64_t t = mono_ms();
        /* A partition backing off is failing: the next start publishes. */
        for (int32_t i = 0; i < k->nparts; i++)
            dirty |= k->parts[i].assigned && k->parts[i].ap.outbox_dirty &&
                     t >= k->parts[i].pub_retry_at;
        if (!dirty && !publish_outboxes_busy(k->pub)) break;
        /* Backing off already (Redis failed): publish_all would return at
         * once, turn after turn; wait for the backoff's end instead. */
        if (t < k->publish_retry_at && !publish_outboxes_busy(k->pub)) {
            sleep_ms((k->publish_retry_at < publish_until ? k->publish_retry_at : publish_until) -
                     t);
            continue;
        }
        int64_t before = k->publish_retry_at;
        publish_all(k, 100);
        if (k->publish_retry_at != before) break; /* failing: the next start publishes */
    }
    report(k, 1);
    publish_metrics(k, 1);
    close_consumer(k, k->rk, "orders");
    close_consumer(k, k->prk, "profiles");
}

int consumer_run(consumer_t *k, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload,
                 consumer_reload_fn on_reload, void *opaque) {
    int64_t last_watchdog = 0;
    uint64_t watchdog_usec = 0;
    int watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
    k->stop = stop;
    k->last_report_ms = mono_ms();
    /* Configuration checked, producer and consumer created, subscribed:
     * from here on the loop serves (Redis may still be retrying). */
    sd_notify(0, "READY=1\nSTATUS=consuming");
    publish_metrics(k, 1);

    while (!*stop) {
        int64_t t = mono_ms();
        /* Every turn pings, whatever waits: the watchdog watches the loop,
         * not Redis.  Every half WatchdogSec, as sd_watchdog_enabled(3)
         * asks. */
        if (watchdog && (t - last_watchdog) * 2000 >= (int64_t)watchdog_usec) {
            sd_notify(0, "WATCHDOG=1");
            last_watchdog = t;
        }
        /* Up to POLL_BATCH records a turn: the loop's own work (deadlines,
         * profiles, metrics) is paid per turn, not per record.  One record
         * at a time through rd_kafka_consumer_poll, which drops records of
         * an assignment that was revoked or sought since they were fetched
         * (rd_kafka_consume_batch_queue in librdkafka 2.0.2 handed such
         * stale records over after a partition was lost and assigned
         * again). */
        size_t got = 0, bytes = 0;
        size_t queued = k->pf.q ? rd_kafka_queue_length(k->pf.q) : 0;
        int oom = 0, wait = poll_timeout(k);
        /* About to wait with nothing held: the last batch sent is
         * confirmed first (its counts, its Kafka offset), and its events
         * go out. */
        if (wait > 0 && queued == 0 && k->apply->flight.active) {
            apply_settle(k->apply);
            publish_all(k, 0);
        }
        int64_t now = 0; /* the clock once a turn, not once a record */
        for (int timeout = wait; got < POLL_BATCH; timeout = 0) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, timeout);
            if (!m) break;
            if (got == 0) now = mono_ms();
            got++;
            bytes += m->len;
            if (m->err) {
                if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET)
                    out_of_range(k, 0, m);
                else
                    read_error(&k->rerr, k->conf->topic_orders, m);
                rd_kafka_message_destroy(m);
                continue;
            }
            read_ok(&k->rerr, k->conf->topic_orders);
            if (enqueue(k, m, now) != 0) {
                oom = 1; /* enqueue destroyed it */
                break;
            }
        }
        if (oom) {
            log_error("consumer", "out of memory");
            k->fatal = 1;
            break;
        }
        prefetch_note(&k->pf, queued, got, bytes);
        /* Fewer than asked: nothing more is queued.  The fetcher may go on
         * (prefetch_bound) while every batch goes now. */
        if (got < POLL_BATCH) prefetch_wake(k, k->rk, &k->pf, 1);
        poll_profiles(k);
        service_due(k, got < POLL_BATCH);
        /* A partition fenced but never taken away by the group: we are
         * its owner after all (the epoch was bumped by a tool or a
         * zombie); claim it again and continue from Redis' offset. */
        for (int32_t i = 0; i < k->nparts; i++) {
            part_t *pt = &k->parts[i];
            if (!pt->assigned || !pt->fenced || mono_ms() - pt->fenced_at < 60000) continue;
            if (rewind_part(k, i, pt) != 0) pt->fenced_at = mono_ms(); /* in a minute, again */
        }
        catchup_check(k);
        /* Never waits for acknowledgements: a delivery report that
         * arrives wakes the loop's wait for records instead
         * (publish_wake_on_reports), so records that come meanwhile are
         * not kept waiting behind a report, nor a report behind records. */
        publish_all(k, 0);
        idle_reviews(k);
        renew_leases(k);
        out_of_range_tick(k);
        if (mono_ms() - k->marker_tick_ms >= MARKER_TICK_MS) {
            k->marker_tick_ms = mono_ms();
            marker_tick(k, 0);
            marker_tick(k, 1);
        }
        if (*reload) {
            /* Between batches: no partition that is applying holds records. */
            int busy = 0;
            for (int32_t i = 0; i < k->nparts; i++)
                busy |= k->parts[i].npending > 0 && !k->parts[i].retry_at;
            if (!busy) {
                *reload = 0;
                if (on_reload) on_reload(opaque);
            }
        }
        report(k, 0);
        publish_metrics(k, 0);
    }
    sd_notify(0, "STOPPING=1");
    shut_down(k);
    return k->fatal ? 1 : 0;
}

void consumer_destroy(consumer_t *k) {
    if (!k) return;
    if (k->apply && k->apply->settled_opaque == k) {
        k->apply->settled = NULL; /* a reply read later is no longer ours */
        k->apply->settled_opaque = NULL;
    }
    for (int32_t i = 0; i < k->nparts; i++) {
        part_drop_pending(k, &k->parts[i]);
        free(k->parts[i].pending);
        free(k->parts[i].prof.m);
    }
    free(k->parts);
    free(k->msgs);
    if (k->pf.q) {
        publish_wake_on_reports(k->pub, NULL); /* no report yields it any more */
        rd_kafka_queue_destroy(k->pf.q);
    }
    if (k->ppf.q) rd_kafka_queue_destroy(k->ppf.q);
    /* Closed in consumer_run (or never joined); a close abandoned at the
     * deadline is not tried again here. */
    if (k->rkt) rd_kafka_topic_destroy(k->rkt);
    if (k->prkt) rd_kafka_topic_destroy(k->prkt);
    if (k->rk) rd_kafka_destroy_flags(k->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (k->prk) rd_kafka_destroy_flags(k->prk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    free(k);
}
