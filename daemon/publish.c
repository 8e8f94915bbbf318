#include "publish.h"

#include "strmap.h"

#include "store.h"

#include "kafkaconf.h"
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One dead letter the producer has seen: looked up by its source
 * coordinates, so a batch that is retried sends again only what Kafka has
 * not acknowledged.  The delivery report writes into it, so it lives until
 * its report is in, even when its partition forgets it first (orphan). */
typedef struct dl_rec {
    int64_t offset;
    int state;                /* DL_* */
    int level;                /* 0: the record itself; 1: a stand-in cut to fit; 2: headers only */
    int orphan;               /* forgotten while in flight: the report frees it */
    rd_kafka_resp_err_t code; /* the last refusal */
    char err[160];
} dl_rec_t;

enum { DL_NONE = 0, DL_INFLIGHT, DL_ACKED, DL_FAILED, DL_REFUSED };

/* The dead letters of one source (topic, partition), ascending offsets. */
typedef struct dl_src {
    char *topic;
    int32_t partition;
    dl_rec_t **recs;
    size_t n, cap;
} dl_src_t;

struct publish {
    rd_kafka_t *rk;
    char *topic; /* dead letters */
    dl_src_t *srcs;
    size_t nsrcs;
    uint64_t dead_standins, dead_lost;
    int64_t dead_quick_until; /* monotonic ms: a wait timed out; until then, none */
    /* The outbox round in flight (see publish_outboxes). */
    struct obox *round;
    size_t round_n;
    arena_t round_replies; /* the round's XRANGE replies (store_pipeline_in) */
    int round_inflight;
    uint64_t published;        /* outbox events acknowledged, for metrics */
    rd_kafka_queue_t *reports; /* the producer's main queue, while it wakes another */
    char lasterr[256];         /* the round's last refusal (round_refused) */
    /* Per partition id: the events Kafka acknowledged in the last round
     * ("entry-id#event-id"), not sent again (obox_remember). */
    strmap_t *acked;
    size_t nacked;
    /* publish_set_frames: the event topics and their schema ids. */
    struct {
        char *topic; /* owned; NULL: events unframed */
        int64_t id;
    } frames[2];
};

/* The message opaque: which kind of status the report writes to. */
typedef struct dr_opaque {
    int kind; /* 0: dead letter (malloc'd, the report frees it), 1: outbox event */
    void *p;
} dr_opaque_t;

/* Outbox events carry their own status as the message opaque: op, kind 1,
 * p the status itself, in the round's array (no malloc per event). */
typedef struct outbox_status {
    dr_opaque_t op;
    int done, failed;
} outbox_status_t;

/* The round's last refusal, for its warning: "topic: reason (hint)". */
static void round_refused(publish_t *d, const char *topic, rd_kafka_resp_err_t err) {
    snprintf(d->lasterr, sizeof(d->lasterr), "%s: %s%s", topic, rd_kafka_err2str(err),
             kafkaconf_refusal_hint(err, 1));
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    publish_t *d = opaque;
    dr_opaque_t *o = m->_private;
    if (!o) return;
    if (o->kind == 0) {
        dl_rec_t *r = o->p;
        if (r->orphan) {
            free(r);
        } else if (m->err) {
            r->state = publish_refused_for_good(m->err) ? DL_REFUSED : DL_FAILED;
            r->code = m->err;
            snprintf(r->err, sizeof(r->err), "%s", rd_kafka_err2str(m->err));
        } else {
            r->state = DL_ACKED;
        }
    } else {
        outbox_status_t *st = o->p;
        st->done = 1;
        st->failed = m->err != 0;
        d->round_inflight--;
        if (m->err) round_refused(d, rd_kafka_topic_name(m->rkt), m->err);
        return; /* the round's */
    }
    free(o);
}

int publish_refused_for_good(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG: return 1;
    default: return 0; /* the topic's state (ACLs, existence): fixed by an operator */
    }
}

publish_t *publish_new(const config_t *c, char *errstr, size_t errstr_size) {
    /* message.timeout.ms bounds how long a message waits for its delivery
     * report; nothing waits on it in the loop (see publish_outboxes). */
    static const char *const fixed[] = {
        "enable.idempotence", "true",  "acks", "all", "linger.ms", "5",
        "message.timeout.ms", "45000", NULL};
    publish_t *d = calloc(1, sizeof(*d));
    rd_kafka_conf_t *conf = NULL;
    char why[512];

    if (!d) goto fail;
    d->topic = strdup(c->topic_dead_letter);
    if (!d->topic) goto fail;
    conf = kafkaconf_build(c, fixed, errstr, errstr_size);
    if (!conf) goto fail;
    /* Consumer-only properties in kafka.* would make librdkafka warn on a
     * producer; they are harmless, so quiet that class of warning. */
    rd_kafka_conf_set(conf, "group.id", "", why, sizeof(why));
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, d);
    d->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!d->rk) {
        snprintf(errstr, errstr_size, "kafka producer: %s", why);
        goto fail; /* conf still ours on failure */
    }
    conf = NULL; /* now owned by rk */
    return d;
fail:
    if (conf) rd_kafka_conf_destroy(conf);
    if (d && !errstr[0]) snprintf(errstr, errstr_size, "out of memory");
    publish_destroy(d);
    return NULL;
}

static void round_free(publish_t *d);

void publish_destroy(publish_t *d) {
    if (!d) return;
    publish_wake_on_reports(d, NULL);
    if (d->rk) {
        /* Every report is served here (or purged by destroy), so nothing
         * written by a report outlives what it points at. */
        rd_kafka_purge(d->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(d->rk, 0);
        rd_kafka_flush(d->rk, 1000);
        rd_kafka_destroy(d->rk);
    }
    round_free(d);
    arena_free(&d->round_replies);
    for (size_t i = 0; i < d->nacked; i++) strmap_free(&d->acked[i], NULL);
    free(d->acked);
    free(d->frames[0].topic);
    free(d->frames[1].topic);
    for (size_t i = 0; i < d->nsrcs; i++) {
        for (size_t j = 0; j < d->srcs[i].n; j++) free(d->srcs[i].recs[j]);
        free(d->srcs[i].recs);
        free(d->srcs[i].topic);
    }
    free(d->srcs);
    free(d->topic);
    free(d);
}

void publish_poll(publish_t *d) {
    rd_kafka_poll(d->rk, 0);
}

/* Called by librdkafka (any of its threads, the producer queue's lock
 * held) for each operation enqueued on the producer's main queue. */
static void reports_event(rd_kafka_t *rk, void *opaque) {
    (void)rk;
    rd_kafka_queue_yield(opaque);
}

void publish_wake_on_reports(publish_t *d, rd_kafka_queue_t *q) {
    if (!d->reports) {
        if (!q) return;
        d->reports = rd_kafka_queue_get_main(d->rk);
        if (!d->reports) return;
    }
    /* Set and cleared under the queue's lock, which the callback runs
     * under: once this returns, no callback still holds the old q. */
    rd_kafka_queue_cb_event_enable(d->reports, q ? reports_event : NULL, q);
    if (!q) {
        rd_kafka_queue_destroy(d->reports);
        d->reports = NULL;
    }
}

static dl_src_t *dl_src(publish_t *d, const char *topic, int32_t partition) {
    for (size_t i = 0; i < d->nsrcs; i++)
        if (d->srcs[i].partition == partition && strcmp(d->srcs[i].topic, topic) == 0)
            return &d->srcs[i];
    dl_src_t *n = realloc(d->srcs, (d->nsrcs + 1) * sizeof(*n));
    if (!n) return NULL;
    d->srcs = n;
    dl_src_t *s = &d->srcs[d->nsrcs];
    memset(s, 0, sizeof(*s));
    if (!(s->topic = strdup(topic))) return NULL;
    s->partition = partition;
    d->nsrcs++;
    return s;
}

/* The record of offset in s, created (DL_NONE) when absent. */
static dl_rec_t *dl_rec(dl_src_t *s, int64_t offset) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->recs[mid]->offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < s->n && s->recs[lo]->offset == offset) return s->recs[lo];
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        dl_rec_t **r = realloc(s->recs, cap * sizeof(*r));
        if (!r) return NULL;
        s->recs = r;
        s->cap = cap;
    }
    dl_rec_t *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->offset = offset;
    memmove(s->recs + lo + 1, s->recs + lo, (s->n - lo) * sizeof(*s->recs));
    s->recs[lo] = r;
    s->n++;
    return r;
}

void publish_dead_forget(publish_t *d, const char *topic, int32_t partition, int64_t below) {
    for (size_t i = 0; i < d->nsrcs; i++) {
        dl_src_t *s = &d->srcs[i];
        if (s->partition != partition || strcmp(s->topic, topic) != 0) continue;
        size_t k = 0;
        for (size_t j = 0; j < s->n; j++) {
            dl_rec_t *r = s->recs[j];
            if (r->offset >= below) {
                s->recs[k++] = r;
            } else if (r->state == DL_INFLIGHT) {
                r->orphan = 1; /* its report frees it */
            } else {
                free(r);
            }
        }
        s->n = k;
    }
}

/* FNV-1a, 64 bits: names the original bytes of a stand-in so they can be
 * matched with the source record; not a cryptographic digest. */
static uint64_t fnv1a64(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* How much of the original a stand-in keeps: level 1 cuts value and key
 * to fit any topic's default limit; level 2 keeps headers only. */
#define DL_STANDIN_VALUE_MAX 65536
#define DL_STANDIN_KEY_MAX 256

/* Produces m's dead letter at r->level.  Returns the producer's error. */
static rd_kafka_resp_err_t dl_produce(publish_t *d, const char *topic, const char *part,
                                      apply_msg_t *m, dl_rec_t *r) {
    char off[32], size[32], digest[32];
    const char *code = order_reason_code(m->verdict);
    size_t vlen = m->value_len, klen = m->key_len;
    dr_opaque_t *o = malloc(sizeof(*o));
    if (!o) return RD_KAFKA_RESP_ERR__NOENT;
    o->kind = 0;
    o->p = r;
    snprintf(off, sizeof(off), "%" PRId64, m->offset);
    if (r->level > 0) {
        vlen = r->level == 1 && vlen > DL_STANDIN_VALUE_MAX ? DL_STANDIN_VALUE_MAX
               : r->level == 1                              ? vlen
                                                            : 0;
        klen = klen > DL_STANDIN_KEY_MAX ? DL_STANDIN_KEY_MAX : klen;
        if (r->level == 2) klen = 0;
    }
    snprintf(size, sizeof(size), "%zu", m->value_len);
    snprintf(digest, sizeof(digest), "%016" PRIx64, fnv1a64(m->value, m->value_len));
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    rd_kafka_header_add(h, "tierd.reason", -1, code, -1);
    rd_kafka_header_add(h, "tierd.reason_text", -1, m->reason, -1);
    rd_kafka_header_add(h, "tierd.source.topic", -1, topic, -1);
    rd_kafka_header_add(h, "tierd.source.partition", -1, part, -1);
    rd_kafka_header_add(h, "tierd.source.offset", -1, off, -1);
    if (r->level > 0) {
        rd_kafka_header_add(h, "tierd.standin", -1, r->err, -1);
        rd_kafka_header_add(h, "tierd.original.size", -1, size, -1);
        rd_kafka_header_add(h, "tierd.original.fnv1a64", -1, digest, -1);
    }
    rd_kafka_resp_err_t err = rd_kafka_producev(
        d->rk, RD_KAFKA_V_TOPIC(d->topic), RD_KAFKA_V_KEY((void *)m->key, klen),
        RD_KAFKA_V_VALUE((void *)m->value, vlen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(o), RD_KAFKA_V_END);
    if (err) rd_kafka_headers_destroy(h); /* librdkafka owns them only on success */
    if (err) free(o);
    return err;
}

/* Sends what is not yet acknowledged: a record refused for good goes
 * again as a stand-in, at most twice; one refused at every level is
 * counted as lost and logged with its coordinates.  Waits for reports at
 * most DL_WAIT_MS, so a broker that does not answer costs the loop that
 * long, and the batch is retried later (sending nothing twice).  After a
 * wait timed out, the calls of the next DL_WAIT_MS do not wait at all:
 * the other partitions with dead letters go back to their backoff at
 * once instead of holding the loop DL_WAIT_MS each. */
#define DL_WAIT_MS 2000

int publish_dead(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n, char *errstr,
                 size_t errstr_size) {
    publish_t *d = opaque;
    char part[16];
    dl_src_t *s = dl_src(d, p->topic, p->partition);
    if (!s) goto oom;
    snprintf(part, sizeof(part), "%d", (int)p->partition);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int64_t start_ms = (int64_t)start.tv_sec * 1000 + start.tv_nsec / 1000000;
    int64_t wait_ms = start_ms < d->dead_quick_until ? 0 : DL_WAIT_MS;
    for (int pass = 0;; pass++) {
        size_t waiting = 0, failed = 0;
        const char *why = "", *hint = "";
        for (size_t i = 0; i < n; i++) {
            dl_rec_t *r = dl_rec(s, dead[i]->offset);
            if (!r) goto oom;
            if (r->state == DL_ACKED) continue;
            if (r->state == DL_INFLIGHT) {
                waiting++;
                continue;
            }
            if (r->state == DL_FAILED && pass > 0) { /* its report came in this call */
                failed++;
                why = r->err;
                hint = kafkaconf_refusal_hint(r->code, 1);
                continue;
            }
            if (r->state == DL_REFUSED) {
                if (r->level == 2) {
                    d->dead_lost++;
                    log_error("publish",
                              "dead letter of %s [%d] offset %" PRId64 " (%s) refused by %s "
                              "even without its bytes: %s; it is lost, only this line says so",
                              p->topic, (int)p->partition, dead[i]->offset,
                              order_reason_code(dead[i]->verdict), d->topic, r->err);
                    r->state = DL_ACKED;
                    continue;
                }
                r->level++;
                d->dead_standins++;
                log_warn("publish",
                         "dead letter of %s [%d] offset %" PRId64 " (%zu bytes) refused by %s: "
                         "%s; sending a stand-in",
                         p->topic, (int)p->partition, dead[i]->offset, dead[i]->value_len, d->topic,
                         r->err);
            }
            rd_kafka_resp_err_t err = dl_produce(d, p->topic, part, dead[i], r);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                r->state = DL_INFLIGHT;
                waiting++;
            } else if (publish_refused_for_good(err)) {
                r->state = DL_REFUSED; /* at once, e.g. larger than message.max.bytes */
                snprintf(r->err, sizeof(r->err), "%s", rd_kafka_err2str(err));
                i--; /* the stand-in, now */
            } else {
                r->state = DL_FAILED;
                r->code = err;
                snprintf(r->err, sizeof(r->err), "%s", rd_kafka_err2str(err));
                failed++;
                why = r->err;
                hint = kafkaconf_refusal_hint(err, 1);
            }
        }
        if (waiting == 0 && failed == 0) return 0;
        rd_kafka_poll(d->rk, wait_ms > 0 ? 50 : 0);
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t ms =
            (int64_t)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (failed || ms >= wait_ms) {
            if (!failed && wait_ms > 0) d->dead_quick_until = start_ms + ms + DL_WAIT_MS;
            snprintf(errstr, errstr_size,
                     "dead-letter topic %s: %zu records unacknowledged, %zu failed%s%s%s", d->topic,
                     waiting, failed, failed ? ": " : "", why, hint);
            return -1;
        }
    }
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return -1;
}

uint64_t publish_dead_standins(const publish_t *d) {
    return d->dead_standins;
}
uint64_t publish_dead_lost(const publish_t *d) {
    return d->dead_lost;
}

/* One partition's outbox as read: its XRANGE reply and one status per
 * event (entry i holds events first[i] .. first[i] + nev[i] - 1). */
typedef struct obox {
    int32_t partition;
    char key[256];
    redisReply *r; /* in the round's arena */
    size_t *first, *nev, nevents;
    outbox_status_t *st;
} obox_t;

static void round_free(publish_t *d) {
    for (size_t p = 0; d->round && p < d->round_n; p++) {
        obox_t *o = &d->round[p];
        free(o->first);
        free(o->nev);
        free(o->st);
    }
    arena_reset(&d->round_replies);
    free(d->round);
    d->round = NULL;
    d->round_n = 0;
}

/* Splits an XRANGE reply into entries and events (t, k, i, v per event). */
static int obox_index(obox_t *o) {
    size_t ne = o->r->elements;
    o->first = calloc(ne + 1, sizeof(*o->first));
    o->nev = calloc(ne + 1, sizeof(*o->nev));
    if (!o->first || !o->nev) return -1;
    for (size_t i = 0; i < ne; i++) {
        redisReply *e = o->r->element[i];
        o->first[i] = o->nevents;
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
            e->element[1]->type == REDIS_REPLY_ARRAY)
            o->nev[i] = e->element[1]->elements / 8;
        o->nevents += o->nev[i];
    }
    o->st = calloc(o->nevents + 1, sizeof(*o->st));
    return o->st ? 0 : -1;
}

int publish_set_frames(publish_t *pub, const char *tier_topic, int64_t tier_id,
                       const char *quota_topic, int64_t quota_id) {
    const char *topics[2] = {tier_topic, quota_topic};
    int64_t ids[2] = {tier_id, quota_id};

    for (size_t i = 0; i < 2; i++) {
        free(pub->frames[i].topic);
        if ((pub->frames[i].topic = strdup(topics[i])) == NULL) return -1;
        pub->frames[i].id = ids[i];
    }
    return 0;
}

/* The event's value as it goes out: the outbox's bytes, behind the
 * Confluent header when its topic has a registered schema.  *tmp is a
 * buffer to free afterwards (NULL when none was needed). */
static const char *framed_value(publish_t *d, const char *topic, const char *value, size_t *len,
                                char **tmp) {
    *tmp = NULL;
    for (size_t i = 0; i < 2; i++) {
        uint32_t id;

        if (d->frames[i].topic == NULL || strcmp(d->frames[i].topic, topic) != 0) continue;
        if ((*tmp = malloc(*len + 5)) == NULL) return NULL;
        id = (uint32_t)d->frames[i].id;
        (*tmp)[0] = 0x00;
        (*tmp)[1] = (char)(id >> 24);
        (*tmp)[2] = (char)(id >> 16);
        (*tmp)[3] = (char)(id >> 8);
        (*tmp)[4] = (char)id;
        memcpy(*tmp + 5, value, *len);
        *len += 5;
        return *tmp;
    }
    return value;
}

/* Produces one event; its status is marked failed when it cannot be. */
static void produce_event(publish_t *d, redisReply **f, outbox_status_t *st, char *errstr,
                          size_t errstr_size) {
    size_t vlen = f[7]->len;
    char *tmp = NULL; /* owned: the framed copy, if any */
    const char *value = framed_value(d, f[1]->str, f[7]->str, &vlen, &tmp);

    if (value == NULL) {
        st->done = st->failed = 1;
        snprintf(errstr, errstr_size, "out of memory");
        return;
    }
    st->op.kind = 1;
    st->op.p = st;
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            d->rk, RD_KAFKA_V_TOPIC(f[1]->str), RD_KAFKA_V_KEY((void *)f[3]->str, f[3]->len),
            RD_KAFKA_V_VALUE((void *)value, vlen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADER("tierd.event_id", f[5]->str, (ssize_t)f[5]->len),
            RD_KAFKA_V_OPAQUE(&st->op), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            d->round_inflight++;
            break;
        }
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            st->done = st->failed = 1;
            snprintf(errstr, errstr_size, "produce to %s: %s", f[1]->str, rd_kafka_err2str(err));
            round_refused(d, f[1]->str, err);
            break;
        }
        rd_kafka_poll(d->rk, 50);
    }
    free(tmp); /* librdkafka copied it (RD_KAFKA_MSG_F_COPY) */
}

/* The partition's acknowledged events (created when `create`); NULL when
 * it has none, or out of memory (then events are only sent again). */
static strmap_t *acked_of(publish_t *d, int32_t partition, int create) {
    size_t p = (size_t)partition;
    if (partition < 0 || (p >= d->nacked && !create)) return NULL;
    if (p >= d->nacked) {
        strmap_t *m = realloc(d->acked, (p + 1) * sizeof(*m));
        if (!m) return NULL;
        memset(m + d->nacked, 0, (p + 1 - d->nacked) * sizeof(*m));
        d->acked = m;
        d->nacked = p + 1;
    }
    return &d->acked[p];
}

/* "entry-id#event-id": the event id, not its place in the entry, so an
 * entry made again under an old id (Redis put back in time) is never
 * taken for one acknowledged; one event id is one event's bytes. */
static size_t acked_key(char *buf, size_t size, const redisReply *entry, size_t ev) {
    const redisReply *eid = entry->element[0], *id = entry->element[1]->element[8 * ev + 5];
    if (eid->len + 1 + id->len >= size) return 0;
    memcpy(buf, eid->str, eid->len);
    buf[eid->len] = '#';
    memcpy(buf + eid->len + 1, id->str, id->len);
    buf[eid->len + 1 + id->len] = '\0';
    return eid->len + 1 + id->len;
}

/* Produces the events of a partition's entries, in order.  An event that
 * cannot even be sent (a malformed entry, a topic librdkafka refuses at
 * once) stops the partition there: the entries after it are not sent this
 * round, so no customer's later event overtakes it.  (A refusal that
 * comes later, in a delivery report, cannot stop what was sent with it.) */
static void obox_produce(publish_t *d, obox_t *o, char *errstr, size_t errstr_size) {
    const strmap_t *acked = acked_of(d, o->partition, 0);
    char key[256];
    int stopped = 0;
    for (size_t i = 0; i < o->r->elements; i++) {
        for (size_t ev = 0; ev < o->nev[i]; ev++) {
            redisReply **f = o->r->element[i]->element[1]->element + 8 * ev;
            outbox_status_t *st = &o->st[o->first[i] + ev];
            if (strcmp(f[0]->str, "t") || strcmp(f[2]->str, "k") || strcmp(f[4]->str, "i") ||
                strcmp(f[6]->str, "v")) {
                st->done = st->failed = 1; /* malformed: left for an operator */
                snprintf(errstr, errstr_size, "outbox entry %s is malformed",
                         o->r->element[i]->element[0]->str);
                continue;
            }
            size_t klen = acked ? acked_key(key, sizeof(key), o->r->element[i], ev) : 0;
            if (klen && strmap_get(acked, key, klen)) {
                st->done = 1; /* acknowledged in an earlier round */
                continue;
            }
            if (stopped) {
                st->done = st->failed = 1; /* behind one that failed: next round */
                continue;
            }
            produce_event(d, f, st, errstr, errstr_size);
        }
        for (size_t ev = 0; ev < o->nev[i] && !stopped; ev++)
            stopped = o->st[o->first[i] + ev].failed;
    }
}

/* Remembers every event of the round Kafka acknowledged, so the next
 * round sends only what it has not: an entry waiting for another of its
 * events (a topic refused it), or one whose XDEL did not land.  Entries
 * deleted no longer show in the next round's read. */
static void obox_remember(publish_t *d, obox_t *o) {
    strmap_t *acked = acked_of(d, o->partition, 1);
    char key[256];
    if (!acked) return;
    strmap_clear(acked, NULL);
    for (size_t i = 0; i < o->r->elements; i++)
        for (size_t ev = 0; ev < o->nev[i]; ev++) {
            const outbox_status_t *st = &o->st[o->first[i] + ev];
            size_t klen = acked_key(key, sizeof(key), o->r->element[i], ev);
            int created;
            if (st->done && !st->failed && klen && !strmap_put(acked, key, klen, &created))
                return; /* out of memory: those are sent again */
        }
}

/* Adds XDEL of the entries whose every event Kafka acknowledged (an entry
 * with a failure is tried again next time, its acknowledged events
 * skipped: obox_remember).  Returns the events acknowledged, -1 when out
 * of memory. */
static int obox_xdel(obox_t *o, store_tx_t *tx, size_t *acked_entries) {
    const char **argv = malloc((o->r->elements + 2) * sizeof(*argv));
    size_t n = 0;
    int events = 0;
    if (!argv) return -1;
    argv[n++] = "XDEL";
    argv[n++] = o->key;
    for (size_t i = 0; i < o->r->elements; i++) {
        int ok = 1;
        for (size_t ev = 0; ev < o->nev[i]; ev++)
            ok &= o->st[o->first[i] + ev].done && !o->st[o->first[i] + ev].failed;
        if (ok) {
            argv[n++] = o->r->element[i]->element[0]->str;
            events += (int)o->nev[i];
        }
    }
    *acked_entries = n - 2;
    int bad = n > 2 && store_tx_add(tx, (int)n, argv, NULL) != 0;
    free(argv);
    return bad ? -1 : events;
}

/* Starts a round: one pipelined read of every outbox, every event
 * produced.  The round owns the replies and the statuses the reports
 * write to until every report is in. */
static int round_start(publish_t *d, store_t *s, const char *topic, const int32_t *parts,
                       size_t nparts, size_t max, char *errstr, size_t errstr_size) {
    char count[32];
    store_tx_t tx = {0};
    redisReply **r = calloc(nparts + 1, sizeof(*r));
    int rc = -1;
    d->round = calloc(nparts + 1, sizeof(*d->round));
    if (!r || !d->round) goto oom;
    d->round_n = nparts;
    d->lasterr[0] = '\0';
    snprintf(count, sizeof(count), "%zu", max);
    for (size_t p = 0; p < nparts; p++) {
        d->round[p].partition = parts[p];
        store_key(s, topic, parts[p], "outbox", d->round[p].key, sizeof(d->round[p].key));
        if (store_tx_addv(&tx, 6, "XRANGE", (size_t)6, d->round[p].key, strlen(d->round[p].key),
                          "-", (size_t)1, "+", (size_t)1, "COUNT", (size_t)5, count,
                          strlen(count)) != 0)
            goto oom;
    }
    if (store_pipeline_in(s, &tx, r, &d->round_replies, errstr, errstr_size) != STORE_OK) goto out;
    for (size_t p = 0; p < nparts; p++) {
        obox_t *o = &d->round[p];
        o->r = r[p];
        r[p] = NULL;
        if (o->r->type != REDIS_REPLY_ARRAY) {
            snprintf(errstr, errstr_size, "redis: XRANGE %s: %s", o->key,
                     o->r->type == REDIS_REPLY_ERROR ? o->r->str : "unexpected reply");
            o->r = NULL;
            continue;
        }
        if (obox_index(o) != 0) {
            /* What was produced already keeps its statuses: the round
             * stays, and finishes when those reports are in. */
            snprintf(errstr, errstr_size, "out of memory");
            o->r = NULL;
            free(o->first), free(o->nev), free(o->st);
            o->first = o->nev = NULL;
            o->st = NULL;
            continue;
        }
        obox_produce(d, o, errstr, errstr_size);
    }
    rc = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
out:
    if (rc != 0) round_free(d); /* nothing was produced */
    store_tx_free(&tx);
    free(r); /* the replies are the round's arena's */
    return rc;
}

/* Ends a round whose every report is in: one round trip deletes what
 * Kafka acknowledged. */
static int round_finish(publish_t *d, store_t *s, int32_t *done, int *nread, int *nleft,
                        size_t *ndone, char *errstr, size_t errstr_size) {
    store_tx_t tx = {0};
    redisReply **dr = NULL;
    size_t ndel = 0, acked = 0, waiting = 0;
    int published = 0, rc = -1;
    for (size_t p = 0; p < d->round_n; p++) {
        obox_t *o = &d->round[p];
        done[p] = o->partition;
        nread[p] = nleft[p] = -1;
        if (!o->r) continue;
        size_t entries = 0;
        int ev = obox_xdel(o, &tx, &entries);
        if (ev < 0) goto oom;
        obox_remember(d, o);
        published += ev;
        acked += entries;
        waiting += o->r->elements - entries;
        ndel += entries > 0;
        nread[p] = (int)o->r->elements;
        nleft[p] = (int)(o->r->elements - entries);
    }
    *ndone = d->round_n;
    dr = calloc(ndel + 1, sizeof(*dr));
    if (!dr) goto oom;
    if (ndel && store_pipeline(s, &tx, dr, errstr, errstr_size) != STORE_OK) goto out;
    if (waiting && !errstr[0])
        snprintf(errstr, errstr_size, "%zu of %zu outbox entries not acknowledged yet: %.160s",
                 waiting, waiting + acked, d->lasterr);
    d->published += (uint64_t)published;
    rc = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
out:
    store_tx_free(&tx);
    for (size_t p = 0; dr && p < ndel; p++)
        if (dr[p]) freeReplyObject(dr[p]);
    free(dr);
    round_free(d);
    return rc;
}

int publish_outboxes(publish_t *d, store_t *s, const char *topic, const int32_t *parts,
                     size_t nparts, size_t max, int wait_ms, int32_t *done, int *nread, int *nleft,
                     size_t *ndone, char *errstr, size_t errstr_size) {
    struct timespec start, now;
    errstr[0] = '\0';
    *ndone = 0;
    if (!d->round) {
        if (nparts == 0) return 0;
        if (round_start(d, s, topic, parts, nparts, max, errstr, errstr_size) != 0) return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int64_t waited = 0;;) {
        int64_t left = wait_ms - waited;
        rd_kafka_poll(d->rk, d->round_inflight > 0 && left > 0 ? (int)(left < 20 ? left : 20) : 0);
        if (d->round_inflight == 0) break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        waited = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (waited >= wait_ms) return 0; /* in flight: the next call goes on waiting */
    }
    char why[256] = "";
    int rc = round_finish(d, s, done, nread, nleft, ndone, why, sizeof(why));
    if (why[0]) snprintf(errstr, errstr_size, "%s", why);
    return rc;
}

int publish_outboxes_busy(const publish_t *d) {
    return d->round != NULL;
}

uint64_t publish_events_published(const publish_t *d) {
    return d->published;
}

rd_kafka_resp_err_t publish_watermarks(publish_t *pub, const char *topic, int32_t partition,
                                       int64_t *lo, int64_t *hi, int timeout_ms) {
    return rd_kafka_query_watermark_offsets(pub->rk, topic, partition, lo, hi, timeout_ms);
}
