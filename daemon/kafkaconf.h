/*
 * kafkaconf.h -- builds an rd_kafka_conf_t from config's kafka.* keys, so
 * the consumer and the dead-letter producer refuse a bad property the same
 * way ("file:line: property: librdkafka's reason"), and routes
 * librdkafka's logs into ours.
 */
#ifndef TIERD_KAFKACONF_H
#define TIERD_KAFKACONF_H

#include "config.h"

#include <librdkafka/rdkafka.h>

/* Applies c->kafka, then the fixed properties in pairs {name, value, ...,
 * NULL} (which win: they are what correctness rests on). */
rd_kafka_conf_t *kafkaconf_build(const config_t *c, const char *const *fixed, char *errstr,
                                 size_t errstr_size);

#endif
