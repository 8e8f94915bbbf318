#include "deadletter.h"

#include "kafkaconf.h"
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct deadletter {
    rd_kafka_t *rk;
    char *topic;
    /* per publish call: how many are in flight, how many failed */
    int inflight, failed;
    char lasterr[256];
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    deadletter_t *d = opaque;
    d->inflight--;
    if (m->err) {
        d->failed++;
        snprintf(d->lasterr, sizeof(d->lasterr), "%s", rd_kafka_err2str(m->err));
    }
}

deadletter_t *deadletter_new(const config_t *c, char *errstr, size_t errstr_size) {
    static const char *const fixed[] = {"enable.idempotence", "true", "acks", "all",
                                        "linger.ms", "5", NULL};
    deadletter_t *d = calloc(1, sizeof(*d));
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
    deadletter_destroy(d);
    return NULL;
}

void deadletter_destroy(deadletter_t *d) {
    if (!d) return;
    if (d->rk) {
        rd_kafka_flush(d->rk, 10000);
        rd_kafka_destroy(d->rk);
    }
    free(d->topic);
    free(d);
}

int deadletter_publish(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n,
                       char *errstr, size_t errstr_size) {
    deadletter_t *d = opaque;
    char part[16], off[32];
    struct timespec start, now;

    d->failed = 0;

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
