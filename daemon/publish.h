/*
 * publish.h -- tierd's producer: the dead-letter topic and the outbox.
 *
 * Dead letters: refused records go to the dead-letter topic with
 * the original key and bytes, and headers
 *   tierd.reason         stable code (NOT_AVRO, KEY_MISMATCH, ...)
 *   tierd.reason_text    a sentence for a person
 *   tierd.source.topic / tierd.source.partition / tierd.source.offset
 * Idempotent producer, acks=all; publish_dead returns only when
 * every record is acknowledged, so the batch may be committed after it.
 * A crash after publishing and before the commit publishes the same
 * records again: consumers dedupe on the source coordinates.
 *
 * Outbox: decided events wait in a partition's outbox stream in Redis
 * (written with the decision).  publish_outbox produces them in order and
 * deletes an entry only after Kafka acknowledged it, so a crash in
 * between publishes it again with the same event_id.
 */
#ifndef TIERD_PUBLISH_H
#define TIERD_PUBLISH_H

#include "apply.h"
#include "config.h"

typedef struct publish publish_t;

publish_t *publish_new(const config_t *c, char *errstr, size_t errstr_size);
void publish_destroy(publish_t *d);
/* apply_dead_fn */
int publish_dead(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n,
                 char *errstr, size_t errstr_size);

/* Publishes up to `max` outbox entries of a partition.  Returns how many
 * were published and deleted (0: the outbox is empty), -1 on error. */
int publish_outbox(publish_t *pub, store_t *s, const char *topic, int32_t partition, size_t max,
                   char *errstr, size_t errstr_size);

#endif
