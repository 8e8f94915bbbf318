#include "publish.h"

#include "store.h"

#include "kafkaconf.h"
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct publish {
    rd_kafka_t *rk;
    char *topic; /* dead letters */
    /* per publish call: how many are in flight, how many failed */
    int inflight, failed;
    char lasterr[256];
    uint64_t published; /* outbox events acknowledged, for metrics */
};

/* Dead letters count failures on the publisher; outbox entries carry
 * their own status as the message opaque. */
typedef struct outbox_status {
    int done, failed;
} outbox_status_t;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    publish_t *d = opaque;
    d->inflight--;
    if (m->_private) {
        outbox_status_t *st = m->_private;
        st->done = 1;
        st->failed = m->err != 0;
    }
    if (m->err) {
        d->failed++;
        snprintf(d->lasterr, sizeof(d->lasterr), "%s", rd_kafka_err2str(m->err));
    }
}

publish_t *publish_new(const config_t *c, char *errstr, size_t errstr_size) {
    /* message.timeout.ms bounds every wait below: each message gets its
     * delivery report (success or failure) within it, so no report can
     * arrive after the wait, into statuses already freed. */
    static const char *const fixed[] = {"enable.idempotence", "true", "acks", "all",
                                        "linger.ms", "5", "message.timeout.ms", "45000",
                                        NULL};
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

void publish_destroy(publish_t *d) {
    if (!d) return;
    if (d->rk) {
        rd_kafka_flush(d->rk, 10000);
        rd_kafka_destroy(d->rk);
    }
    free(d->topic);
    free(d);
}

int publish_dead(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n,
                       char *errstr, size_t errstr_size) {
    publish_t *d = opaque;
    char part[16], off[32];
    struct timespec start, now;

    d->failed = 0;
    d->lasterr[0] = '\0';

    snprintf(part, sizeof(part), "%d", (int)p->partition);
    for (size_t i = 0; i < n; i++) {
        apply_msg_t *m = dead[i];
        const char *code = order_reason_code(m->verdict);
        snprintf(off, sizeof(off), "%" PRId64, m->offset);
        for (;;) {
            rd_kafka_resp_err_t err = rd_kafka_producev(
                d->rk, RD_KAFKA_V_TOPIC(d->topic),
                RD_KAFKA_V_KEY((void *)m->key, m->key_len),
                RD_KAFKA_V_VALUE((void *)m->value, m->value_len),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_HEADER("tierd.reason", code, -1),
                RD_KAFKA_V_HEADER("tierd.reason_text", m->reason, -1),
                RD_KAFKA_V_HEADER("tierd.source.topic", p->topic, -1),
                RD_KAFKA_V_HEADER("tierd.source.partition", part, -1),
                RD_KAFKA_V_HEADER("tierd.source.offset", off, -1), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                d->inflight++;
                break;
            }
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                snprintf(errstr, errstr_size, "dead-letter produce: %s", rd_kafka_err2str(err));
                rd_kafka_flush(d->rk, 5000);
                return -1;
            }
            rd_kafka_poll(d->rk, 50);
        }
    }
    /* Wait for every acknowledgement; librdkafka retries on its own until
     * message.timeout.ms, after which a failure is reported here. */
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (d->inflight > 0) {
        rd_kafka_poll(d->rk, 100);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 60) {
            snprintf(errstr, errstr_size, "dead-letter topic %s: %d records unacknowledged after 60 s",
                     d->topic, d->inflight);
            return -1;
        }
    }
    if (d->failed) {
        snprintf(errstr, errstr_size, "dead-letter topic %s: %d records failed: %s", d->topic,
                 d->failed, d->lasterr);
        return -1;
    }
    return 0;
}


/* One partition's outbox as read: its XRANGE reply and one status per
 * event (entry i holds events first[i] .. first[i] + nev[i] - 1). */
typedef struct obox {
    char key[256];
    redisReply *r; /* borrowed from the pipeline's replies */
    size_t *first, *nev, nevents;
    outbox_status_t *st;
} obox_t;

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

/* Produces one event; its status is marked failed when it cannot be. */
static void produce_event(publish_t *d, redisReply **f, outbox_status_t *st, char *errstr,
                          size_t errstr_size) {
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            d->rk, RD_KAFKA_V_TOPIC(f[1]->str), RD_KAFKA_V_KEY((void *)f[3]->str, f[3]->len),
            RD_KAFKA_V_VALUE((void *)f[7]->str, f[7]->len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADER("tierd.event_id", f[5]->str, (ssize_t)f[5]->len),
            RD_KAFKA_V_OPAQUE(st), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            d->inflight++;
            return;
        }
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            st->done = st->failed = 1;
            snprintf(errstr, errstr_size, "produce to %s: %s", f[1]->str, rd_kafka_err2str(err));
            return;
        }
        rd_kafka_poll(d->rk, 50);
    }
}

static void obox_produce(publish_t *d, obox_t *o, char *errstr, size_t errstr_size) {
    for (size_t i = 0; i < o->r->elements; i++)
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
            produce_event(d, f, st, errstr, errstr_size);
        }
}

/* Adds XDEL of the entries whose every event Kafka acknowledged (an entry
 * with a failure is published again, whole, next time: same ids).  Returns
 * the events acknowledged, -1 when out of memory. */
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

int publish_outboxes(publish_t *d, store_t *s, const char *topic, const int32_t *parts,
                     size_t nparts, size_t max, int *nread, char *errstr, size_t errstr_size) {
    char count[32];
    store_tx_t tx = {0};
    redisReply **r = calloc(nparts + 1, sizeof(*r)), **dr = NULL;
    obox_t *o = calloc(nparts + 1, sizeof(*o));
    int rc = -1, published = 0;
    size_t ndel = 0, acked = 0, waiting = 0;

    errstr[0] = '\0';
    if (!r || !o) goto oom;
    snprintf(count, sizeof(count), "%zu", max);
    for (size_t p = 0; p < nparts; p++) {
        nread[p] = -1;
        store_key(s, topic, parts[p], "outbox", o[p].key, sizeof(o[p].key));
        if (store_tx_addv(&tx, 6, "XRANGE", (size_t)6, o[p].key, strlen(o[p].key), "-",
                          (size_t)1, "+", (size_t)1, "COUNT", (size_t)5, count,
                          strlen(count)) != 0)
            goto oom;
    }
    /* One round trip reads every outbox; one wait covers all their events. */
    if (store_pipeline(s, &tx, r, errstr, errstr_size) != STORE_OK) goto out;
    store_tx_free(&tx);
    for (size_t p = 0; p < nparts; p++) {
        o[p].r = r[p];
        if (r[p]->type != REDIS_REPLY_ARRAY) {
            snprintf(errstr, errstr_size, "redis: XRANGE %s: %s", o[p].key,
                     r[p]->type == REDIS_REPLY_ERROR ? r[p]->str : "unexpected reply");
            o[p].r = NULL;
            continue;
        }
        if (obox_index(&o[p]) != 0) goto oom;
        obox_produce(d, &o[p], errstr, errstr_size);
    }
    /* Until every report is in: message.timeout.ms (45 s) bounds it. */
    while (d->inflight > 0) rd_kafka_poll(d->rk, 100);
    for (size_t p = 0; p < nparts; p++) {
        if (!o[p].r) continue;
        size_t entries = 0;
        int ev = obox_xdel(&o[p], &tx, &entries);
        if (ev < 0) goto oom;
        published += ev;
        acked += entries;
        waiting += o[p].r->elements - entries;
        ndel += entries > 0;
        nread[p] = (int)o[p].r->elements;
    }
    dr = calloc(ndel + 1, sizeof(*dr));
    if (!dr) goto oom;
    if (ndel && store_pipeline(s, &tx, dr, errstr, errstr_size) != STORE_OK) goto out;
    if (waiting && !errstr[0])
        snprintf(errstr, errstr_size, "%zu of %zu outbox entries not acknowledged yet: %s",
                 waiting, waiting + acked, d->lasterr);
    d->published += (uint64_t)published;
    rc = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
out:
    store_tx_free(&tx);
    for (size_t p = 0; o && p < nparts; p++) {
        free(o[p].first);
        free(o[p].nev);
        free(o[p].st);
    }
    for (size_t p = 0; r && p < nparts; p++)
        if (r[p]) freeReplyObject(r[p]);
    for (size_t p = 0; dr && p < ndel; p++)
        if (dr[p]) freeReplyObject(dr[p]);
    free(r);
    free(dr);
    free(o);
    return rc;
}

uint64_t publish_events_published(const publish_t *d) { return d->published; }
