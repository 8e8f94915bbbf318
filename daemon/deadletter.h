/*
 * deadletter.h -- publishes refused records to the dead-letter topic:
 * the original key and bytes, and headers
 *   tierd.reason         stable code (NOT_AVRO, KEY_MISMATCH, ...)
 *   tierd.reason_text    a sentence for a person
 *   tierd.source.topic / tierd.source.partition / tierd.source.offset
 * Idempotent producer, acks=all; deadletter_publish returns only when
 * every record is acknowledged, so the batch may be committed after it.
 * A crash after publishing and before the commit publishes the same
 * records again: consumers dedupe on the source coordinates.
 */
#ifndef TIERD_DEADLETTER_H
#define TIERD_DEADLETTER_H

#include "apply.h"
#include "config.h"

typedef struct deadletter deadletter_t;

deadletter_t *deadletter_new(const config_t *c, char *errstr, size_t errstr_size);
void deadletter_destroy(deadletter_t *d);
/* apply_dead_fn */
int deadletter_publish(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n,
                       char *errstr, size_t errstr_size);

#endif
