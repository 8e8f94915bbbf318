/*
 * startcheck.c -- the broker lets tierd in and shows it its topics, or
 * tierd says why and stops.
 *
 * librdkafka treats a refused SASL login or a failed TLS handshake like a
 * broker that is down: it reports the error to error_cb and tries again,
 * forever.  At a start that is a configuration mistake, not an outage, and
 * retrying would only hide it; so one client of its own asks for metadata
 * first, and the first such error ends the start; so does a topic the
 * broker will not describe to tierd's user (no ACL of its on the topic).
 * After the start nothing here runs: outages are retried as before.
 */
#include "startcheck.h"

#include "kafkaconf.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* What error_cb saw: the first refusal, and the last other error. */
typedef struct seen {
    rd_kafka_resp_err_t refused; /* __AUTHENTICATION or __SSL; 0 none */
    char refused_why[512];
    char last_why[512];
} seen_t;

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    seen_t *s = opaque;
    (void)rk;
    if ((err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR__SSL) &&
        !s->refused) {
        s->refused = (rd_kafka_resp_err_t)err;
        snprintf(s->refused_why, sizeof(s->refused_why), "%s", reason);
    } else if (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        snprintf(s->last_why, sizeof(s->last_why), "%s", reason);
    }
}

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* " (kafka.a from WHERE, kafka.b from WHERE)" for the properties of names
 * that are set; nothing when none is. */
static void wheres(const config_t *c, const char *const *names, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; names[i] && len < size; i++)
        for (size_t j = 0; j < c->nkafka && len < size; j++)
            if (strcmp(c->kafka[j].name, names[i]) == 0)
                len += (size_t)snprintf(buf + len, size - len, "%skafka.%s from %s",
                                        len ? ", " : " (", names[i], c->kafka[j].where);
    if (len && len < size) snprintf(buf + len, size - len, ")");
}

static void refusal(const config_t *c, const seen_t *s, char *errstr, size_t errstr_size) {
    static const char *const sasl[] = {"sasl.mechanisms", "sasl.username", "sasl.password", NULL};
    static const char *const tls[] = {"ssl.ca.location", "ssl.ca.pem",
                                      "ssl.endpoint.identification.algorithm", NULL};
    char w[1024];
    if (s->refused == RD_KAFKA_RESP_ERR__AUTHENTICATION) {
        wheres(c, sasl, w, sizeof(w));
        snprintf(errstr, errstr_size,
                 "kafka: the broker refused tierd's login at start: %s; check kafka.sasl.username "
                 "and its password%s",
                 s->refused_why, w);
    } else {
        wheres(c, tls, w, sizeof(w));
        snprintf(errstr, errstr_size,
                 "kafka: the TLS handshake with the broker failed at start: %s; check that "
                 "kafka.ssl.ca.location names the CA that signed the broker's certificate%s",
                 s->refused_why, w);
    }
}

/* Each topic tierd reads or writes as the broker shows it to tierd's user:
 * one it will not even describe (no ACL of tierd's on it at all) is a
 * configuration mistake as well, said before anything is consumed.  A
 * topic that does not exist (yet) is not refused here. */
static int topics_visible(rd_kafka_t *rk, const config_t *c, int timeout_ms, char *errstr,
                          size_t errstr_size) {
    const struct {
        const char *name, *key, *right;
    } t[] = {{c->topic_orders, "topics.orders", "Read"},
             {c->topic_profiles, "topics.profiles", "Read"},
             {c->topic_tier_changes, "topics.tier_changes", "Write"},
             {c->topic_quota_events, "topics.quota_events", "Write"},
             {c->topic_dead_letter, "topics.dead_letter", "Write"}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, t[i].name, NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (!rkt) continue;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
        rd_kafka_resp_err_t terr = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->topic_cnt == 1) terr = md->topics[0].err;
        if (md) rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
        if (err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
            terr == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
            snprintf(errstr, errstr_size,
                     "kafka: the broker does not let tierd's user see topic %s (%s): grant it %s "
                     "on the topic (docs/operations.md, Security)",
                     t[i].name, t[i].key, t[i].right);
            return -1;
        }
    }
    return 0;
}

int startcheck_kafka(const config_t *c, int timeout_ms, volatile sig_atomic_t *stop, char *errstr,
                     size_t errstr_size) {
    seen_t seen;
    char why[512];
    rd_kafka_conf_t *conf = NULL; /* owned until rd_kafka_new takes it */
    rd_kafka_t *rk = NULL;
    int rc = STARTCHECK_NO_ANSWER;
    long long deadline = mono_ms() + timeout_ms;

    memset(&seen, 0, sizeof(seen));
    conf = kafkaconf_build(c, NULL, errstr, errstr_size);
    if (!conf) return STARTCHECK_REFUSED; /* checked at start already: not expected */
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, &seen);
    /* A consumer handle: kafka.* is mostly the consumer's (group.id ...),
     * and a producer would warn about each such property. */
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errstr_size, "kafka: %s", why);
        return STARTCHECK_REFUSED;
    }
    conf = NULL; /* now owned by rk */
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        long long left = deadline - mono_ms();
        int wait = left > 500 ? 500 : left > 0 ? (int)left : 0;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, wait);
        if (md) rd_kafka_metadata_destroy(md);
        rd_kafka_poll(rk, 0); /* serves error_cb */
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            left = deadline - mono_ms();
            rc = topics_visible(rk, c, left > 2000 ? (int)left : 2000, errstr, errstr_size) == 0
                     ? STARTCHECK_OK
                     : STARTCHECK_REFUSED;
            break;
        }
        if (seen.refused) {
            refusal(c, &seen, errstr, errstr_size);
            rc = STARTCHECK_REFUSED;
            break;
        }
        if (stop && *stop) {
            snprintf(errstr, errstr_size, "kafka: the start-up check ended by a signal");
            break;
        }
        if (mono_ms() >= deadline) {
            snprintf(errstr, errstr_size, "kafka: no broker answered within %d ms at start%s%s",
                     timeout_ms, seen.last_why[0] ? ": " : "", seen.last_why);
            break;
        }
    }
    rd_kafka_destroy(rk);
    return rc;
}
