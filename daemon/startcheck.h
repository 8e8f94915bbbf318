/*
 * startcheck.h -- what tierd makes sure of before its loop starts: that
 * the broker lets it in and shows it its topics.  A wrong SASL password or a broker certificate
 * tierd does not trust stops it at start with the reason, before anything
 * is written to Redis; a broker that merely does not answer yet does not
 * (librdkafka keeps trying, as it does for any outage after the start).
 * The Redis side of the same check is store_check (store.h).
 */
#ifndef TIERD_STARTCHECK_H
#define TIERD_STARTCHECK_H

#include "config.h"

#include <signal.h>
#include <stddef.h>

enum {
    STARTCHECK_OK = 0,        /* a broker answered a metadata request */
    STARTCHECK_NO_ANSWER = 1, /* no broker answered before the deadline; errstr says why */
    STARTCHECK_REFUSED = -1,  /* authentication or the TLS handshake failed, or a topic is not
                                 authorised: errstr says which */
};

/* How long the start waits for a broker's first answer. */
#define STARTCHECK_KAFKA_MS 10000

/* Builds a short-lived client from kafka.* (the properties every client
 * of tierd's shares: bootstrap.servers, security.protocol, sasl.*, ssl.*),
 * asks a broker for metadata until timeout_ms has passed or *stop is set,
 * and destroys it.  Authentication errors (RD_KAFKA_RESP_ERR__AUTHENTICATION)
 * and TLS failures (__SSL) end the wait at once: STARTCHECK_REFUSED with a
 * sentence naming the properties to look at (and where they were set;
 * never a value).  Once a broker answered, each of the five topics whose
 * metadata the broker refuses to tierd's user (TOPIC_AUTHORIZATION_FAILED)
 * is STARTCHECK_REFUSED too, naming the topic, its key and the right to
 * grant.  Logs nothing itself but librdkafka's lines. */
int startcheck_kafka(const config_t *c, int timeout_ms, volatile sig_atomic_t *stop, char *errstr,
                     size_t errstr_size);

#endif
