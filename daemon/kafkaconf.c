#include "kafkaconf.h"

#include "log.h"

#include <stdio.h>
#include <string.h>

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    int l = level <= 3 ? LOG_ERROR : level == 4 ? LOG_WARN : level <= 6 ? LOG_INFO : LOG_DEBUG;
    /* The dead-letter producer shares kafka.* with the consumer; its
     * warnings about consumer-only properties say nothing useful. */
    if (rk && rd_kafka_type(rk) == RD_KAFKA_PRODUCER && strcmp(fac, "CONFWARN") == 0 &&
        strstr(buf, "consumer property"))
        l = LOG_DEBUG;
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
