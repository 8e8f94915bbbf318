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
    static const char *const fixed[] = {"enable.idempotence", "true", "acks", "all",
                                        "linger.ms", "5", NULL};
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


int publish_outbox(publish_t *d, store_t *s, const char *topic, int32_t partition, size_t max,
                   char *errstr, size_t errstr_size) {
    char key[256], count[32];
    store_tx_t tx = {0};
    redisReply *r = NULL, *dr = NULL;
    outbox_status_t *st = NULL; /* one per event */
    size_t *first = NULL, *nev = NULL, total = 0;
    int rc = -1, published = 0;

    store_key(s, topic, partition, "outbox", key, sizeof(key));
    snprintf(count, sizeof(count), "%zu", max);
    if (store_tx_addv(&tx, 6, "XRANGE", (size_t)6, key, strlen(key), "-", (size_t)1, "+",
                      (size_t)1, "COUNT", (size_t)5, count, strlen(count)) != 0)
        goto oom;
    if (store_pipeline(s, &tx, &r, errstr, errstr_size) != STORE_OK) goto out;
    store_tx_free(&tx);
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(errstr, errstr_size, "redis: XRANGE %s: %s", key,
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        goto out;
    }
    if (r->elements == 0) {
        rc = 0;
        goto out;
    }
    /* An entry holds the events of one transaction: t, k, i, v per event. */
    first = calloc(r->elements, sizeof(*first));
    nev = calloc(r->elements, sizeof(*nev));
    if (!first || !nev) goto oom;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        first[i] = total;
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
            e->element[1]->type == REDIS_REPLY_ARRAY)
            nev[i] = e->element[1]->elements / 8;
        total += nev[i];
    }
    st = calloc(total + 1, sizeof(*st));
    if (!st) goto oom;
    for (size_t i = 0; i < r->elements; i++) {
        for (size_t ev = 0; ev < nev[i]; ev++) {
            redisReply **f = r->element[i]->element[1]->element + 8 * ev;
            outbox_status_t *sti = &st[first[i] + ev];
            if (strcmp(f[0]->str, "t") || strcmp(f[2]->str, "k") || strcmp(f[4]->str, "i") ||
                strcmp(f[6]->str, "v")) {
                sti->done = sti->failed = 1; /* malformed: left for an operator */
                snprintf(errstr, errstr_size, "outbox entry %s is malformed", r->element[i]->element[0]->str);
                continue;
            }
            for (;;) {
                rd_kafka_resp_err_t err = rd_kafka_producev(
                    d->rk, RD_KAFKA_V_TOPIC(f[1]->str),
                    RD_KAFKA_V_KEY((void *)f[3]->str, f[3]->len),
                    RD_KAFKA_V_VALUE((void *)f[7]->str, f[7]->len),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                    RD_KAFKA_V_HEADER("tierd.event_id", f[5]->str, (ssize_t)f[5]->len),
                    RD_KAFKA_V_OPAQUE(sti), RD_KAFKA_V_END);
                if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                    d->inflight++;
                    break;
                }
                if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                    sti->done = sti->failed = 1;
                    snprintf(errstr, errstr_size, "produce to %s: %s", f[1]->str,
                             rd_kafka_err2str(err));
                    break;
                }
                rd_kafka_poll(d->rk, 50);
            }
        }
    }
    /* Wait for every acknowledgement (librdkafka retries on its own). */
    for (int waited = 0; d->inflight > 0 && waited < 600; waited++) rd_kafka_poll(d->rk, 100);
    /* Delete the entries whose every event Kafka acknowledged; an entry
     * with a failure is published again, whole, next time (same ids). */
    {
        const char **argv = malloc((r->elements + 2) * sizeof(*argv));
        size_t n = 0;
        if (!argv) goto oom;
        argv[n++] = "XDEL";
        argv[n++] = key;
        for (size_t i = 0; i < r->elements; i++) {
            int ok = 1;
            for (size_t ev = 0; ev < nev[i]; ev++)
                ok &= st[first[i] + ev].done && !st[first[i] + ev].failed;
            if (ok) {
                argv[n++] = r->element[i]->element[0]->str;
                published += (int)nev[i];
            }
        }
        if (n > 2) {
            int bad = store_tx_add(&tx, (int)n, argv, NULL) != 0;
            free(argv);
            if (bad) goto oom;
            if (store_pipeline(s, &tx, &dr, errstr, errstr_size) != STORE_OK) goto out;
        } else {
            free(argv);
        }
        if (n - 2 < r->elements && !errstr[0])
            snprintf(errstr, errstr_size, "%zu of %zu outbox entries not acknowledged yet: %s",
                     r->elements - (n - 2), r->elements, d->lasterr);
        d->published += (uint64_t)published;
        rc = (int)r->elements;
    }
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
out:
    store_tx_free(&tx);
    if (r) freeReplyObject(r);
    if (dr) freeReplyObject(dr);
    free(st);
    free(first);
    free(nev);
    return rc;
}

uint64_t publish_events_published(const publish_t *d) { return d->published; }
