/*
 * kafkaconf.h -- builds an rd_kafka_conf_t from config's kafka.* keys, so
 * the consumer and the dead-letter producer refuse a bad property the same
 * way ("file:line: property: librdkafka's reason"), routes librdkafka's
 * logs into ours, and says what an operator does about a topic that
 * refuses tierd.
 */
#ifndef TIERD_KAFKACONF_H
#define TIERD_KAFKACONF_H

#include "config.h"

#include <librdkafka/rdkafka.h>

/* Applies c->kafka, then the fixed properties in pairs {name, value, ...,
 * NULL} (which win: they are what correctness rests on). */
rd_kafka_conf_t *kafkaconf_build(const config_t *c, const char *const *fixed, char *errstr,
                                 size_t errstr_size);

/* What an operator does about a topic the broker refuses tierd (its user
 * may not read or write it: write says which, or it does not exist), as
 * " (hint)" for a log line; "" for other errors. */
const char *kafkaconf_refusal_hint(rd_kafka_resp_err_t err, int write);

#endif
