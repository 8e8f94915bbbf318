#include "kafkaconf.h"

#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Kafka's committed offsets are advisory (the offsets that count live in
 * Redis), and librdkafka commits every auto.commit.interval.ms: while the
 * broker refuses the commits (an ACL taken away) one warning a minute says
 * so, the others go to debug.  Any thread logs: a relaxed atomic. */
#define COMMITFAIL_LOG_S 60
static _Atomic int64_t commitfail_at; /* time(): a log's pace needs no more */

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    int l = level <= 3 ? LOG_ERROR : level == 4 ? LOG_WARN : level <= 6 ? LOG_INFO : LOG_DEBUG;
    /* The dead-letter producer shares kafka.* with the consumer; its
     * warnings about consumer-only properties say nothing useful. */
    if (rk && rd_kafka_type(rk) == RD_KAFKA_PRODUCER && strcmp(fac, "CONFWARN") == 0 &&
        strstr(buf, "consumer property"))
        l = LOG_DEBUG;
    if (l == LOG_WARN && strcmp(fac, "COMMITFAIL") == 0) {
        int64_t t = (int64_t)time(NULL),
                last = atomic_load_explicit(&commitfail_at, memory_order_relaxed);
        if (last && t - last < COMMITFAIL_LOG_S)
            l = LOG_DEBUG;
        else
            atomic_store_explicit(&commitfail_at, t, memory_order_relaxed);
    }
    log_at(l, "kafka", "%s: %s", fac, buf);
}

rd_kafka_conf_t *kafkaconf_build(const config_t *c, const char *const *fixed, char *errstr,
                                 size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char why[512];

    for (size_t i = 0; i < c->nkafka; i++) {
        if (rd_kafka_conf_set(conf, c->kafka[i].name, c->kafka[i].value, why, sizeof(why)) !=
            RD_KAFKA_CONF_OK) {
            snprintf(errstr, errstr_size, "%s: kafka.%s: %s", c->kafka[i].where, c->kafka[i].name,
                     why);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    for (size_t i = 0; fixed && fixed[i]; i += 2) {
        if (rd_kafka_conf_set(conf, fixed[i], fixed[i + 1], why, sizeof(why)) != RD_KAFKA_CONF_OK) {
            snprintf(errstr, errstr_size, "kafka.%s: %s", fixed[i], why);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    return conf;
}

const char *kafkaconf_refusal_hint(rd_kafka_resp_err_t err, int write) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        return write
                   ? " (grant tierd's Kafka user Write on the topic: docs/operations.md, Security)"
                   : " (grant tierd's Kafka user Read on the topic: docs/operations.md, Security)";
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
        return write
                   ? ""
                   : " (grant tierd's Kafka user Read on its group: docs/operations.md, Security)";
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        return " (create the topic, or name one that exists in topics.*)";
    default: return "";
    }
}
